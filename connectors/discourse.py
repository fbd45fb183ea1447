"""Discourse forums: the latest posts of the whole forum (`/posts.json`), optionally only some categories.

`/posts.json` lists posts newest first, 50 a page, and `?before=<post id>` reads further back, so the
post id is the mark. Ids are built from topic and post number (`discourse:forum.example.org/t/42/3`):
stable, readable, and they let a reply name its parent (`reply_to_post_number`) without a lookup.
Each post carries its topic's title (`metadata.topic_title`; the opening post also as `title`) so an
agent sees what a reply is about. Staff posts (`admin`/`moderator`/`staff` flags) are marked as the
brand's (`author.is_brand`, `author.role`); an edited post (`version` > 1) carries `edited_at`.
A deleted post (`deleted_at`, `user_deleted`: listed to staff API keys) becomes a Deletion. Hidden
and staff action posts, posts without words (an image without alt text, an empty body) are skipped;
an image's alt text is the text of an image-only post. An API key is optional (public forums need none).
"""
from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any, Optional
from urllib.parse import urlsplit

from connectors.base import Deletion, Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark
from connectors.text import html_to_text


REGULAR_POST = 1  # post_type 2-4 are moderator actions, small actions and whispers
ROLES = ("admin", "moderator", "staff")  # the post serializer's flags, the most specific first


class _Cooked(HTMLParser):
    """Finds, in a post's cooked HTML, the markup that is not what its author wrote or described.

    Discourse wraps a large image in a lightbox with a `div.meta` caption (file name, size), and writes
    emoji as images (`img.emoji`, alt ":smile:"): neither may make an image-only post look like text,
    nor stand in for an image's description. `cuts` are their (start, end) offsets in the markup."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.markup = markup
        self.cuts: list[tuple[int, int]] = []
        self._lines = [0]
        for line in markup.splitlines(keepends=True):
            self._lines.append(self._lines[-1] + len(line))
        self._caption: Optional[int] = None
        self._depth = 0
        self.feed(markup)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "img" and "emoji" in classes and self._caption is None:
            start = self._offset()
            self.cuts.append((start, start + len(self.get_starttag_text() or "")))
        elif tag == "div" and self._caption is not None:
            self._depth += 1
        elif tag == "div" and "meta" in classes:
            self._caption, self._depth = self._offset(), 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._caption is not None:
            self._depth -= 1
            if not self._depth:
                self.cuts.append((self._caption, self.markup.find(">", self._offset()) + 1))
                self._caption = None


def cooked_text(cooked: str) -> str:
    """The words of a post and its images' descriptions (alt texts), without lightbox captions and emoji."""
    kept, start = [], 0
    for cut_start, cut_end in _Cooked(cooked).cuts:
        kept.append(cooked[start:cut_start])
        start = cut_end
    return html_to_text("".join(kept) + cooked[start:])


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
        if self.categories and raw.get("category_id") not in self.categories:
            return None
        topic, number = raw.get("topic_id"), raw.get("post_number")
        if not isinstance(topic, int) or not isinstance(number, int):
            return Malformed(position, "post has no topic_id/post_number", json.dumps(raw).encode())
        if raw.get("deleted_at") or raw.get("user_deleted"):
            return Deletion(self._id(topic, number), self.kind, raw.get("deleted_at"))
        if raw.get("hidden") or raw.get("post_type", 1) != REGULAR_POST:
            return None
        text = cooked_text(raw.get("cooked") or "") or (raw.get("raw") or "").strip()
        if not text:
            return None  # nothing to read: an empty body, an image without alt text
        parent = raw.get("reply_to_post_number") or (1 if number > 1 else None)
        role = next((flag for flag in ROLES if raw.get(flag)), None)
        edited = isinstance(raw.get("version"), int) and raw["version"] > 1
        return {"id": self._id(topic, number), "source": self.kind, "text": text,
                "title": raw.get("topic_title") if number == 1 else None,
                "url": f"{self.url}/t/{raw.get('topic_slug') or '-'}/{topic}/{number}",
                "author": {"id": str(raw["user_id"]) if raw.get("user_id") is not None else None,
                           "handle": raw.get("username"), "name": raw.get("name") or None,
                           "is_brand": True if role else None, "role": role},
                "created_at": raw.get("created_at"), "edited_at": raw.get("updated_at") if edited else None,
                "thread_id": self._id(topic, 1), "reply_to_id": self._id(topic, parent) if parent else None,
                "metadata": {"forum": self.host, "category_id": raw.get("category_id"),
                             "topic_title": raw.get("topic_title")}}
