"""RSS 2.0 and Atom feeds: blogs, forum and news feeds, comment feeds.

Conditional GETs (ETag / Last-Modified) make an unchanged feed cost one 304. Feeds carry no
cursor, so the delivered-ids table does the deduplication. Comment feeds link replies to their
post through `thr:in-reply-to` (Atom threading) or the item's comments link.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Optional, Union

from connectors.base import Malformed, Page, Post, Source
from connectors.http import HttpClient
from connectors.text import html_to_text

ATOM = "{http://www.w3.org/2005/Atom}"
THREAD = "{http://purl.org/syndication/thread/1.0}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
DC = "{http://purl.org/dc/elements/1.1/}"


def _rfc3339(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    value = value.strip()
    try:
        if value[:4].isdigit():  # Atom: already RFC 3339
            return value.replace("z", "Z")
        return parsedate_to_datetime(value).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    except (TypeError, ValueError):
        return None


class FeedSource(Source):
    kind = "rss"

    def __init__(self, name: str, url: str, every_s: float, http: HttpClient) -> None:
        super().__init__(name, every_s)
        self.url, self.http = url, http

    def fetch(self, state: dict[str, Any]) -> Page:
        headers = {k: v for k, v in (("If-None-Match", state.get("etag")),
                                     ("If-Modified-Since", state.get("last_modified"))) if v}
        response = self.http.get(self.url, headers)
        if response.status == 304:
            return Page([], state)
        if response.status != 200:
            raise RuntimeError(f"feed {self.url} answered HTTP {response.status}")
        new_state = {"etag": response.headers.get("etag"), "last_modified": response.headers.get("last-modified")}
        try:
            root = ET.fromstring(response.body)
        except ET.ParseError as exc:
            return Page([Malformed(f"rss:{self.url}", f"feed is not XML: {exc}", response.body[:65536])], new_state)
        entries = root.findall(f"{ATOM}entry") or root.findall("./channel/item")
        return Page([self._entry(e, i) for i, e in enumerate(entries)], new_state)

    def _entry(self, entry: ET.Element, index: int) -> Union[Post, Malformed]:
        atom = entry.tag == f"{ATOM}entry"
        position = f"rss:{self.url}#entry-{index}"
        if atom:
            link = next((l.get("href") for l in entry.findall(f"{ATOM}link") if l.get("rel", "alternate") == "alternate"), None)
            native = entry.findtext(f"{ATOM}id") or link
            body = entry.findtext(f"{ATOM}content") or entry.findtext(f"{ATOM}summary") or ""
            created = entry.findtext(f"{ATOM}published") or entry.findtext(f"{ATOM}updated")
            author = entry.findtext(f"{ATOM}author/{ATOM}name")
            reply = entry.find(f"{THREAD}in-reply-to")
            reply_to = reply.get("ref") if reply is not None else None
        else:
            link = entry.findtext("link")
            native = entry.findtext("guid") or link
            body = entry.findtext(f"{CONTENT}encoded") or entry.findtext("description") or ""
            created = entry.findtext("pubDate")
            author = entry.findtext(f"{DC}creator") or entry.findtext("author")
            reply_to = None
        title = entry.findtext(f"{ATOM}title" if atom else "title")
        text = html_to_text(body)
        if not native:
            return Malformed(position, "entry has neither id/guid nor link", ET.tostring(entry))
        if not text:
            return Malformed(position, "entry has no text", ET.tostring(entry))
        return {"id": self.post_id(native.strip()), "source": self.kind, "text": text,
                "title": html_to_text(title) if title else None, "url": link.strip() if link else None,
                "author": {"name": author.strip()} if author else None, "created_at": _rfc3339(created),
                "thread_id": self.post_id(reply_to) if reply_to else None,
                "reply_to_id": self.post_id(reply_to) if reply_to else None,
                "metadata": {"feed": self.url}}
