"""YouTube replies: `comments.insert` (`POST /youtube/v3/comments?part=snippet` with `snippet.parentId` and
`snippet.textOriginal`), with an OAuth token of the channel (`youtube.force-ssl` scope; the API key the connector
reads with cannot write). YouTube threads are one level deep: a reply's id is `<top-level id>.<reply id>`, and an
answer to a reply goes to the top-level comment. A published reply is found again with `comments.list?parentId=`,
written by the channel with our words.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlencode

from connectors.config import YouTubeConfig
from connectors.replies.base import ReplyClient, ReplyError, Sent, Target, same_text


class YouTubeReplies(ReplyClient):
    kind = "youtube"
    config: YouTubeConfig

    def reply(self, target: Target, text: str, key: str) -> Sent:
        body = {"snippet": {"parentId": self._parent(target), "textOriginal": text}}
        answer = self.post(f"{self._api()}/comments?part=snippet", "youtube reply", self.bearer(), body=body)
        if not isinstance(answer, dict) or not answer.get("id"):
            raise ReplyError("youtube reply: the answer has no comment id")
        return Sent(str(answer["id"]), f"youtube:{answer['id']}")

    def find_reply(self, target: Target, text: str) -> Optional[Sent]:
        params = urlencode({"part": "snippet", "parentId": self._parent(target), "maxResults": "100",
                            "textFormat": "plainText"})
        answer = self.get(f"{self._api()}/comments?{params}", "youtube reply lookup", self.bearer())
        for comment in (answer or {}).get("items") or []:
            snippet = (comment.get("snippet") or {}) if isinstance(comment, dict) else {}
            author = (snippet.get("authorChannelId") or {}).get("value")
            published = str(snippet.get("textOriginal") or snippet.get("textDisplay") or "")
            if comment.get("id") and author == self.config.channel_id and same_text(published, text):
                return Sent(str(comment["id"]), f"youtube:{comment['id']}")
        return None

    def _parent(self, target: Target) -> str:
        return target.native(self.kind).split(".")[0]

    def _api(self) -> str:
        return f"{self.config.api_url.rstrip('/')}/youtube/v3"
