"""Discourse replies: `POST /posts.json` with `topic_id`, `reply_to_post_number` and `raw`, authenticated by the
`Api-Key` and `Api-Username` headers (the key from the reply account's variable, the account as the user). A
published reply is found again in the topic's posts (`/t/{id}/posts.json`), by our user and our words.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from connectors.config import DiscourseConfig
from connectors.replies.base import ReplyClient, ReplyError, Sent, Target, handle_of, same_text


class DiscourseReplies(ReplyClient):
    kind = "discourse"
    config: DiscourseConfig

    @property
    def host(self) -> str:
        return urlsplit(self.config.url).netloc

    def reply(self, target: Target, text: str, key: str) -> Sent:
        topic, number = self._position(target)
        body = {"topic_id": topic, "reply_to_post_number": number, "raw": text}
        post = self.post(f"{self.config.url.rstrip('/')}/posts.json", "discourse reply", self._auth(), body=body)
        if not isinstance(post, dict) or not post.get("post_number"):
            raise ReplyError("discourse reply: the answer has no post number")
        return Sent(str(post.get("id")), self._post_id(post.get("topic_id") or topic, post["post_number"]))

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        topic, number = self._position(target)
        answer = self.get(f"{self.config.url.rstrip('/')}/t/{topic}/posts.json?include_raw=true",
                          "discourse reply lookup", self._auth())
        for post in ((answer or {}).get("post_stream") or {}).get("posts") or []:
            if not isinstance(post, dict) or handle_of(str(post.get("username") or "")) != handle_of(self.account):
                continue
            raw, cooked = post.get("raw"), post.get("cooked")
            if post.get("post_number") and (same_text(str(raw), text) if raw else same_text(str(cooked or ""), text,
                                                                                             markup=True)):
                return Sent(str(post.get("id")), self._post_id(topic, post["post_number"]))
        return None

    def _position(self, target: Target) -> tuple[int, int]:
        """`discourse:HOST/t/TOPIC/NUMBER` -> (topic, number)."""
        host, _, rest = target.native(self.kind).partition("/t/")
        topic, _, number = rest.partition("/")
        if host != self.host or not topic.isdigit() or not number.isdigit():
            raise ReplyError(f"post {target.post_id} is not a post of {self.host} (discourse:HOST/t/TOPIC/NUMBER)")
        return int(topic), int(number)

    def _post_id(self, topic: int, number: int) -> str:
        return f"discourse:{self.host}/t/{topic}/{number}"

    def _auth(self) -> dict[str, str]:
        return {"Api-Key": self._token, "Api-Username": self.account.lstrip("@"), "Accept": "application/json"}
