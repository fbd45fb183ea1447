"""RSS 0.9x, RSS 1.0 (RDF), RSS 2.0, Atom 0.3 and Atom 1.0 feeds: blogs, forums, news, comment feeds,
YouTube channel and GitHub release feeds.

Why feedparser: real feeds are XML only in name often enough that a hand-written ElementTree reader
lost about 30 % of the entries: HTML entities XML does not define (`&nbsp;`), bytes before the
declaration, charsets given only in the HTTP header or declared wrongly, Big5/EUC-KR/UTF-16 bodies,
RDF and Atom 0.3 namespaces, xhtml content, `media:description`, relative links. feedparser 6 has
handled these for two decades: a loose parser takes over when the strict one fails (the problem is
reported as `bozo`), the encoding is found from the HTTP Content-Type, the BOM and the declaration
with fallbacks, relative links are resolved against `xml:base` or the feed URL, HTML is sanitised and
every format and date comes out in one entry shape. The fetching stays ours (`connectors/http.py`:
retries, Retry-After, user agent, conditional GETs); feedparser only gets the body, in a BytesIO (a
plain bytes string could be taken for a file name or URL), and the response headers.

Conditional GETs (ETag / Last-Modified) make an unchanged feed cost one 304. Feeds carry no cursor,
so the delivered-ids table does the deduplication. Comment feeds link replies to their post through
`thr:in-reply-to` (Atom threading). Entries with nothing to triage (only a title, only an image
without alt text) are counted as skipped; an entry without id, guid or link is a dead letter and the
others go on. A feed that cannot be read at all is one dead letter, and a problem feedparser recovered
from one warning, per change of the problem: the source state remembers a hash of the error (without
its line and column, which move whenever an entry is added), so polling the same broken feed every few
minutes repeats nothing but a debug line.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union
from urllib.parse import urljoin

import feedparser

from connectors.base import Malformed, Page, Post, Source
from connectors.http import HttpClient
from connectors.text import html_to_text

log = logging.getLogger(__name__)
_HTML = {"text/html", "application/xhtml+xml"}
_SPACES = re.compile(r"\s+")
MAX_RAW_BYTES = 65536  # how much of an unreadable body a dead letter keeps


@dataclass
class FeedReading:
    """What the connector makes of one feed body: posts and malformed entries in feed order, skipped entries,
    and why the feed as a whole could not be read (`unreadable`) or was read despite errors (`problem`)."""
    items: list[Union[Post, Malformed]]
    skipped: int
    entries: int  # the entries feedparser found
    unreadable: Optional[str] = None
    problem: Optional[str] = None
    fingerprint: Optional[str] = None  # names the problem without its line and column, which move with every new entry


def parse(body: bytes, headers: Mapping[str, str], url: str) -> feedparser.FeedParserDict:
    """feedparser's reading of a body: the HTTP headers decide the charset, the feed URL is the base for
    relative links (a Content-Location header, resolved against the URL, takes its place)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    lowered["content-location"] = urljoin(url, lowered.get("content-location", ""))
    return feedparser.parse(io.BytesIO(body), response_headers=lowered)


def read_feed(body: bytes, headers: Mapping[str, str], url: str, kind: str = "rss") -> FeedReading:
    """Turn a feed body into posts (ids `<kind>:<guid or id or link>`), malformed entries and a skip count."""
    parsed = parse(body, headers, url)
    exc = parsed.get("bozo_exception") if parsed.bozo else None
    error = f"{type(exc).__name__}: {exc}" if exc else None
    fingerprint = _fingerprint(f"{type(exc).__name__}: {getattr(exc, 'getMessage', exc.__str__)()}") if exc else None
    # A notice about the Content-Type or the charset on an empty feed is still an empty feed, not a broken one.
    broken = exc is not None and not isinstance(exc, feedparser.ThingsNobodyCaresAboutButMe)
    if not parsed.entries and (broken or not parsed.version):
        reason = error if broken else "no RSS or Atom root element"
        return FeedReading([], 0, 0, f"feed cannot be read: {reason}", fingerprint=fingerprint if broken else
                           _fingerprint(reason))
    items: list[Union[Post, Malformed]] = []
    skipped = 0
    for index, entry in enumerate(parsed.entries):
        item = _entry(entry, f"{kind}:{url}#entry-{index}", kind, url, parsed.version.startswith("rss"))
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return FeedReading(items, skipped, len(parsed.entries), problem=error, fingerprint=fingerprint)


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
        reading = read_feed(response.body, response.headers, self.url, self.kind)
        new_state = {"etag": response.headers.get("etag"), "last_modified": response.headers.get("last-modified"),
                     "problem": reading.fingerprint}
        repeated = reading.fingerprint is not None and state.get("problem") == reading.fingerprint
        if reading.unreadable:
            if repeated:
                log.debug("feed still unreadable, already reported", extra={"fields": {"source": self.name}})
                return Page([], new_state)
            return Page([Malformed(f"{self.kind}:{self.url}", reading.unreadable, response.body[:MAX_RAW_BYTES])],
                        new_state)
        if reading.problem:
            (log.debug if repeated else log.warning)(
                "feed read despite errors", extra={"fields": {"source": self.name, "problem": reading.problem,
                                                               "entries": reading.entries}})
        return Page(list(reading.items), new_state, skipped=reading.skipped)


def _entry(entry: feedparser.FeedParserDict, position: str, kind: str, feed_url: str,
           rss: bool) -> Union[Post, Malformed, None]:
    """A Post, a Malformed entry, or None for an entry with nothing to triage (only a title or an image)."""
    text = _text(entry, rss)
    if not text:
        return None
    # Drupal's guids read "314 at https://example.org": encode the spaces a post id may not contain.
    native = _SPACES.sub("%20", (entry.get("id") or entry.get("link") or "").strip())
    if not native:
        return Malformed(position, "entry has neither id/guid nor link",
                         json.dumps(entry, ensure_ascii=False, default=str).encode())
    reply_to = (entry.get("thr_in-reply-to") or {}).get("ref")
    title = _value(entry.get("title_detail"))
    author = (entry.get("author_detail") or {}).get("name") or entry.get("author")
    return {"id": f"{kind}:{native}", "source": kind, "text": text, "title": title or None,
            "url": entry.get("link") or None, "author": {"name": author.strip()} if author else None,
            "created_at": _rfc3339(entry), "thread_id": f"{kind}:{reply_to}" if reply_to else None,
            "reply_to_id": f"{kind}:{reply_to}" if reply_to else None, "metadata": {"feed": feed_url}}


def _text(entry: feedparser.FeedParserDict, rss: bool) -> str:
    """The first non-empty body: content (content:encoded, Atom content), else the summary (description,
    media:description, itunes:summary).

    In RSS, feedparser files a second description-like element (a Mastodon image's media:description
    after the status's description) as plain-text content: it ranks after the summary, so the words of
    the post win over an image's description, which remains the text of an image-only post."""
    content = entry.get("content", [])
    main = [c for c in content if c.get("type") in _HTML] if rss else content
    for detail in [*main, entry.get("summary_detail"), *(c for c in content if c not in main)]:
        text = _value(detail)
        if text:
            return text
    return ""


def _value(detail: Optional[Mapping[str, Any]]) -> str:
    if not detail or not detail.get("value"):
        return ""
    value = str(detail["value"])
    return html_to_text(value) if detail.get("type") in _HTML else value.strip()


def _rfc3339(entry: feedparser.FeedParserDict) -> Optional[str]:
    """Publication time (pubDate, published, issued, dc:date, else updated) as RFC 3339 UTC; feedparser
    parses RFC 822, RFC 3339 and a dozen other formats into UTC struct_time."""
    parsed = entry.get("published_parsed") or entry.get("updated_parsed") or entry.get("created_parsed")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed) if parsed else None


def _fingerprint(problem: str) -> str:
    return hashlib.sha256(problem.encode()).hexdigest()[:16]
