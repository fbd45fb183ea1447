"""YouTube: the comment threads on a channel and its videos, through the Data API v3 with an API key.

`commentThreads?allThreadsRelatedToChannelId=...&order=time` lists threads newest first with
`nextPageToken`; the publication time is the mark. Each thread brings its top-level comment and up to
five replies; a thread with more (`totalReplyCount`) has all of them read with `comments.list?parentId=`
(paged). A reply is a post of its own with `reply_to_id` naming the comment. A comment by the channel
itself (`authorChannelId` = the configured channel) is the brand's (`author.role` "owner"); a comment
updated after it was published carries `edited_at`. The key travels in the `X-Goog-Api-Key` header,
not in the URL. An exhausted daily quota (HTTP 403 `quotaExceeded`) pauses the source until its next poll.
"""
from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import urlencode

from connectors.base import Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark


class YouTubeChannelComments(ListingSource):
    kind = "youtube"

    def __init__(self, name: str, api_url: str, channel_id: str, every_s: float, http: HttpClient, api_key: str,
                 backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.api_url, self.channel_id, self.http = api_url.rstrip("/"), channel_id, http
        self.headers = {"X-Goog-Api-Key": api_key}

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        params = {"part": "snippet,replies", "allThreadsRelatedToChannelId": self.channel_id, "order": "time",
                  "maxResults": "100", "textFormat": "plainText", **({"pageToken": cursor} if cursor else {})}
        answer = json_body(self.http.get(f"{self.api_url}/youtube/v3/commentThreads?{urlencode(params)}", self.headers),
                           f"youtube channel {self.channel_id}")
        entries: list[tuple[Optional[Mark], Item]] = []
        for thread in answer.get("items") or []:
            top = ((thread.get("snippet") or {}).get("topLevelComment") or {}) if isinstance(thread, dict) else {}
            entries.append(self._comment(top, None, thread))
            replies = (thread.get("replies") or {}).get("comments") or [] if isinstance(thread, dict) else []
            total = (thread.get("snippet") or {}).get("totalReplyCount") if isinstance(thread, dict) else None
            if isinstance(total, int) and total > len(replies) and top.get("id"):
                replies = self._replies(top["id"])
            entries += [self._comment(reply, top.get("id"), thread) for reply in replies]
        return Listing(entries, answer.get("nextPageToken"))

    def _replies(self, parent: str) -> list[Any]:
        """Every reply to a top-level comment (a thread lists five at most)."""
        replies: list[Any] = []
        token: Optional[str] = None
        while True:
            params = {"part": "snippet", "parentId": parent, "maxResults": "100", "textFormat": "plainText",
                      **({"pageToken": token} if token else {})}
            answer = json_body(self.http.get(f"{self.api_url}/youtube/v3/comments?{urlencode(params)}", self.headers),
                               f"youtube replies in channel {self.channel_id}")
            replies += answer.get("items") or []
            token = answer.get("nextPageToken")
            if not token:
                return replies

    def _comment(self, comment: dict[str, Any], parent: Optional[str], thread: Any) -> tuple[Optional[Mark], Item]:
        snippet = comment.get("snippet") or {}
        published = snippet.get("publishedAt")
        if not comment.get("id") or not published:
            return None, Malformed(f"youtube:{self.channel_id}", "comment has no id or publishedAt", json.dumps(thread).encode())
        text = (snippet.get("textOriginal") or snippet.get("textDisplay") or "").strip()
        if not text:
            return published, None
        video, author = snippet.get("videoId"), (snippet.get("authorChannelId") or {}).get("value")
        owner = author == self.channel_id
        updated = snippet.get("updatedAt")
        return published, {
            "id": self.post_id(comment["id"]), "source": self.kind, "text": text,
            "url": f"https://www.youtube.com/watch?v={video}&lc={comment['id']}" if video else None,
            "author": {"id": author, "name": snippet.get("authorDisplayName"),
                       "is_brand": True if owner else None, "role": "owner" if owner else None},
            "created_at": published, "edited_at": updated if isinstance(updated, str) and updated > published else None,
            "thread_id": self.post_id(parent or comment["id"]),
            "reply_to_id": self.post_id(parent) if parent else None,
            "metadata": {"channel_id": self.channel_id, "video_id": video}}
