"""Facebook Page replies: `POST /{object-id}/comments` with `message`, as the page (its page token). A comment on
a comment is a reply in that comment's thread. A published reply is found again among the object's comments
(`GET /{object-id}/comments`) written by the page with our words. Pages have no direct messages here (Messenger
is another product), so a private case is marked for the helpdesk instead.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote, urlencode

from connectors.config import FacebookConfig
from connectors.replies.base import ReplyClient, ReplyError, Sent, Target, same_text


class FacebookReplies(ReplyClient):
    kind = "facebook"
    config: FacebookConfig

    def reply(self, target: Target, text: str, key: str) -> Sent:
        answer = self.post(self._comments(target), "facebook reply", self.bearer(), fields={"message": text})
        if not isinstance(answer, dict) or not answer.get("id"):
            raise ReplyError("facebook reply: the answer has no comment id")
        return Sent(str(answer["id"]), f"facebook:{answer['id']}")

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        params = urlencode({"fields": "id,message,from,created_time", "filter": "stream", "order": "reverse_chronological",
                            "limit": "100"})
        answer = self.get(f"{self._comments(target)}?{params}", "facebook reply lookup", self.bearer())
        for comment in (answer or {}).get("data") or []:
            author = (comment.get("from") or {}) if isinstance(comment, dict) else {}
            if comment.get("id") and str(author.get("id")) == self.config.page_id and \
                    same_text(str(comment.get("message") or ""), text):
                return Sent(str(comment["id"]), f"facebook:{comment['id']}")
        return None

    def _comments(self, target: Target) -> str:
        return f"{self.config.api_url.rstrip('/')}/{quote(target.native(self.kind))}/comments"
