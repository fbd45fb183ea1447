"""Reddit replies: `POST /api/comment` (`thing_id` = the fullname answered, `text`, `api_type=json`) and, for a
direct message, `POST /api/compose`, with the account's user OAuth token (`submit` and `privatemessages` scopes;
the connectors' app-only token cannot post). Reddit answers errors inside a 200 (`json.errors`, e.g. RATELIMIT),
which are refusals: nothing was posted. A published comment is found again in the comment tree of the submission
(`/comments/{article}`), a message in `/message/sent`.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional
from urllib.parse import urlencode

from connectors.config import RedditConfig
from connectors.replies.base import Recipient, ReplyClient, ReplyError, Sent, Target, handle_of, same_text


class RedditReplies(ReplyClient):
    kind = "reddit"
    direct_messages = True
    config: RedditConfig

    def reply(self, target: Target, text: str, key: str) -> Sent:
        fields = {"api_type": "json", "thing_id": target.native(self.kind), "text": text}
        answer = self._checked(self.post(self._url("/api/comment"), "reddit reply", self._auth(), fields=fields),
                               "reddit reply")
        things = ((answer.get("data") or {}).get("things") or [{}])
        name = (things[0].get("data") or {}).get("name") if isinstance(things[0], dict) else None
        if not name:
            raise ReplyError("reddit reply: the answer names no comment")
        return Sent(str(name), f"reddit:{name}")

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        fullname = target.native(self.kind)
        article = self._article(target)
        params = {"limit": "500", "depth": "2", "raw_json": "1", **({"comment": fullname[3:]}
                                                                     if fullname.startswith("t1_") else {})}
        answer = self.get(self._url(f"/comments/{article[3:]}?{urlencode(params)}"), "reddit reply lookup", self._auth())
        listings = answer if isinstance(answer, list) else []
        for comment in _comments(listings[1] if len(listings) > 1 else {}):
            if comment.get("parent_id") == fullname and handle_of(str(comment.get("author") or "")) == \
                    handle_of(self.account) and same_text(str(comment.get("body") or ""), text):
                return Sent(str(comment["name"]), f"reddit:{comment['name']}")
        return None

    def direct(self, target: Target, recipient: Recipient, text: str, key: str) -> Sent:
        if not recipient.handle:
            raise ReplyError("reddit private message: the customer's username is not known (no private post document)")
        fields = {"api_type": "json", "to": recipient.handle.lstrip("@").removeprefix("u/"),
                  "subject": text.strip().splitlines()[0][:100], "text": text}
        self._checked(self.post(self._url("/api/compose"), "reddit private message", self._auth(), fields=fields),
                      "reddit private message")
        found = self.find_direct(target, recipient, text)  # /api/compose answers without the message's id
        return found or Sent("", None)

    def find_direct(self, target: Target, recipient: Recipient, text: str) -> Optional[Sent]:
        answer = self.get(self._url("/message/sent?limit=100&raw_json=1"), "reddit private message lookup", self._auth())
        for child in ((answer or {}).get("data") or {}).get("children") or []:
            message = child.get("data") or {} if isinstance(child, dict) else {}
            if handle_of(str(message.get("dest") or "")) == handle_of(recipient.handle or "") and \
                    same_text(str(message.get("body") or ""), text):
                return Sent(str(message.get("name") or ""), None)
        return None

    def _article(self, target: Target) -> str:
        """The submission (t3_) a reply lives under: the target itself, the case's thread, or Reddit's word."""
        fullname = target.native(self.kind)
        if fullname.startswith("t3_"):
            return fullname
        thread = target.thread_native(self.kind)
        if thread and thread.startswith("t3_"):
            return thread
        info = self.get(self._url(f"/api/info?id={fullname}"), "reddit reply lookup", self._auth())
        children = ((info or {}).get("data") or {}).get("children") or [{}]
        link = (children[0].get("data") or {}).get("link_id") if isinstance(children[0], dict) else None
        if not link:
            raise ReplyError(f"reddit reply lookup: Reddit does not know {fullname}")
        return str(link)

    def _checked(self, answer: Any, what: str) -> dict[str, Any]:
        body = (answer or {}).get("json") or {} if isinstance(answer, dict) else {}
        errors = body.get("errors") or []
        if errors:
            first = errors[0]
            raise ReplyError(f"{what}: Reddit refused it: {' '.join(map(str, first)) if isinstance(first, list) else first}")
        return body

    def _url(self, path: str) -> str:
        return f"{self.config.api_url.rstrip('/')}{path}"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"bearer {self._token}"}


def _comments(listing: Any) -> Iterator[dict[str, Any]]:
    """Every comment of a comment-tree Listing, replies included."""
    for child in ((listing or {}).get("data") or {}).get("children") or [] if isinstance(listing, dict) else []:
        data = child.get("data") if isinstance(child, dict) and child.get("kind") == "t1" else None
        if isinstance(data, dict):
            yield data
            yield from _comments(data.get("replies"))
