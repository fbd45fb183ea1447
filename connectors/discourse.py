"""Discourse forums: the latest posts of the whole forum (`/posts.json`), optionally only some categories.

`/posts.json` lists posts newest first, 50 a page, and `?before=<post id>` reads further back, so the
post id is the mark. Ids are built from topic and post number (`discourse:forum.example.org/t/42/3`):
stable, readable, and they let a reply name its parent (`reply_to_post_number`) without a lookup.
Deleted, hidden and staff action posts are skipped. An API key is optional (public forums need none).
"""
from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import urlsplit

from connectors.base import Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark
from connectors.text import html_to_text


REGULAR_POST = 1  # post_type 2-4 are moderator actions, small actions and whispers


class DiscourseSource(ListingSource):
    kind = "discourse"

    def __init__(self, name: str, url: str, every_s: float, http: HttpClient, categories: tuple[int, ...] = (),
                 api_key: Optional[str] = None, api_username: Optional[str] = None, backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.url, self.http, self.categories = url.rstrip("/"), http, set(categories)
        self.host = urlsplit(self.url).netloc
        self.headers = {"Accept": "application/json"}
        if api_key:
            self.headers.update({"Api-Key": api_key, "Api-Username": api_username or "system"})

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        url = f"{self.url}/posts.json" + (f"?before={cursor}" if cursor else "")
        posts = json_body(self.http.get(url, self.headers), f"discourse {self.url}").get("latest_posts")
        if not isinstance(posts, list):
            raise ValueError(f"discourse {self.url}: the answer has no latest_posts list")
        entries = [(raw.get("id") if isinstance(raw.get("id"), int) else None, self._post(raw, i))
                   for i, raw in enumerate(posts)]
        ids = [m for m, _ in entries if m is not None]
        return Listing(entries, str(min(ids)) if ids else None)

    def _id(self, topic: Any, number: Any) -> str:
        return self.post_id(f"{self.host}/t/{topic}/{number}")

    def _post(self, raw: dict[str, Any], index: int) -> Item:
        position = f"discourse:{self.url}/posts.json#{raw.get('id', f'item-{index}')}"
        if raw.get("deleted_at") or raw.get("hidden") or raw.get("user_deleted") or raw.get("post_type", 1) != REGULAR_POST:
            return None
        if self.categories and raw.get("category_id") not in self.categories:
            return None
        topic, number = raw.get("topic_id"), raw.get("post_number")
        if not isinstance(topic, int) or not isinstance(number, int):
            return Malformed(position, "post has no topic_id/post_number", json.dumps(raw).encode())
        text = html_to_text(raw.get("cooked") or "") or (raw.get("raw") or "").strip()
        if not text:
            return Malformed(position, "post has no text", json.dumps(raw).encode())
        parent = raw.get("reply_to_post_number") or (1 if number > 1 else None)
        return {"id": self._id(topic, number), "source": self.kind, "text": text,
                "title": raw.get("topic_title") if number == 1 else None,
                "url": f"{self.url}/t/{raw.get('topic_slug') or '-'}/{topic}/{number}",
                "author": {"id": str(raw["user_id"]) if raw.get("user_id") is not None else None,
                           "handle": raw.get("username"), "name": raw.get("name") or None},
                "created_at": raw.get("created_at"), "thread_id": self._id(topic, 1),
                "reply_to_id": self._id(topic, parent) if parent else None,
                "metadata": {"forum": self.host, "category_id": raw.get("category_id")}}
