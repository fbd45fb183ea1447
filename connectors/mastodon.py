"""Mastodon: hashtag and account timelines through the REST API, and the hashtag streaming API.

Status ids grow over time on one server, so the id is the mark; pages come newest first and the
`Link: <...max_id=...>; rel="next"` header points to the older page. Post ids name the server
(`mastodon:social.example:1131...`) because the same status has a different id on every server.
Boosts (the booster did not write the text), non-public statuses and statuses without words are skipped;
an image's description (`media_attachments[].description`) is the text of a post without a caption.
A reply's thread is its conversation's first status: `in_reply_to_id` names only the parent, so the root
is `ancestors[0]` of `GET /api/v1/statuses/:id/context` (one request per reply, cached by parent for the
round; if the server cannot say, the parent stands in). `edited_at` is passed on; the stream's `delete`
events become Deletions and its `status.update` events (edits) are read like new statuses. A token is optional.
An account timeline read beside hashtags (the brand's, whose replies seldom carry the hashtag) leaves the public
statuses with one of those hashtags to the hashtag timeline (`leave_tags`), so each is delivered once.
"""
from __future__ import annotations

import json
import logging
import re
from typing import AbstractSet, Any, Iterator, Optional
from urllib.parse import quote, urlsplit

from connectors.base import Deletion, Malformed
from connectors.http import HttpClient, SourceUnavailable, json_body
from connectors.listing import Item, Listing, ListingSource, Mark
from connectors.streaming import CatchUpStream, Event
from connectors.text import html_to_text
from core import safe_json
from core.redact import redact_text

log = logging.getLogger(__name__)
PAGE_SIZE = 40
MAX_CACHED_ROOTS = 10_000  # a long-open stream does not grow the cache for ever
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')
_LANG = re.compile(r"^[a-z]{2,3}$")


class MastodonTimeline(ListingSource):
    kind = "mastodon"

    def __init__(self, name: str, url: str, timeline: str, every_s: float, http: HttpClient,
                 token: Optional[str] = None, backfill_pages: int = 1, leave_tags: AbstractSet[str] = frozenset()) -> None:
        """`timeline` is `tag:NAME` or `account:USER@SERVER`; `leave_tags`: lower-case hashtags read by their own
        timelines."""
        super().__init__(name, every_s, backfill_pages)
        self.url, self.timeline, self.http, self.leave_tags = url.rstrip("/"), timeline, http, leave_tags
        self.host = urlsplit(self.url).netloc
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._path: Optional[str] = None
        self._roots: dict[str, str] = {}  # parent status id -> its conversation's first status id

    def _timeline_path(self) -> str:
        if self._path is None:
            kind, _, value = self.timeline.partition(":")
            if kind == "tag":
                self._path = f"/api/v1/timelines/tag/{quote(value.lstrip('#'))}"
            else:
                account = json_body(self.http.get(f"{self.url}/api/v1/accounts/lookup?acct={quote(value.lstrip('@'))}",
                                                  self.headers), f"mastodon account {value}")
                self._path = f"/api/v1/accounts/{account['id']}/statuses"
        return self._path

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        if cursor is None:  # a new round
            self._roots.clear()
        url = cursor or f"{self.url}{self._timeline_path()}?limit={PAGE_SIZE}"
        response = self.http.get(url, self.headers)
        statuses = json_body(response, f"mastodon {self.host} {self.timeline}")
        if not isinstance(statuses, list):
            raise ValueError(f"mastodon {self.host}: the timeline answer is not a list")
        link = _NEXT.search(response.headers.get("link", ""))
        return Listing([self.entry(s) for s in statuses], link.group(1) if link and statuses else None)

    def entry(self, status: Any) -> tuple[Optional[Mark], Item]:
        native = status.get("id") if isinstance(status, dict) else None
        if not isinstance(native, str) or not native.isdigit():
            return None, Malformed(f"mastodon:{self.url}{self._path or ''}", "status has no id",
                                   json.dumps(status).encode())
        return int(native), self._post(status)

    def _post(self, status: dict[str, Any]) -> Item:
        if status.get("reblog") or status.get("visibility") not in ("public", "unlisted") or self._left(status):
            return None
        text = html_to_text(status.get("content") or "") or "\n".join(
            m["description"].strip() for m in status.get("media_attachments") or []
            if isinstance(m, dict) and isinstance(m.get("description"), str) and m["description"].strip())
        if not text:
            return None  # media without a caption or a description
        account = status.get("account") or {}
        reply_to = status.get("in_reply_to_id")
        root = self._root(status["id"], reply_to) if reply_to else status["id"]
        language = status.get("language")
        return {"id": self.post_id(f"{self.host}:{status['id']}"), "source": self.kind, "text": text,
                "title": status.get("spoiler_text") or None, "url": status.get("url") or status.get("uri"),
                "author": {"id": account.get("id"), "handle": account.get("acct"),
                           "name": account.get("display_name") or None,
                           "followers": account.get("followers_count")},
                "created_at": status.get("created_at"), "edited_at": status.get("edited_at"),
                "lang_hint": language if isinstance(language, str) and _LANG.match(language) else None,
                "thread_id": self.post_id(f"{self.host}:{root}"),
                "reply_to_id": self.post_id(f"{self.host}:{reply_to}") if reply_to else None,
                "metadata": {"server": self.host, "timeline": self.timeline}}

    def _left(self, status: dict[str, Any]) -> bool:
        """A public status with one of `leave_tags` is its hashtag timeline's (unlisted ones are in none)."""
        return bool(self.leave_tags) and status.get("visibility") == "public" and any(
            isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"].casefold() in self.leave_tags
            for t in status.get("tags") or [])

    def _root(self, status_id: str, parent: str) -> str:
        """The first status of a reply's conversation, as this server knows it."""
        if parent not in self._roots:
            if len(self._roots) >= MAX_CACHED_ROOTS:
                self._roots.clear()
            try:
                context = json_body(self.http.get(f"{self.url}/api/v1/statuses/{quote(status_id)}/context", self.headers),
                                    f"mastodon {self.host} context")
                ancestors = context.get("ancestors") if isinstance(context, dict) else None
                first = ancestors[0].get("id") if isinstance(ancestors, list) and ancestors and isinstance(ancestors[0], dict) else None
            except SourceUnavailable as exc:  # deleted meanwhile, or a server that hides it: the parent stands in
                log.warning("mastodon thread root unknown", extra={"fields": {"server": self.host, "error": redact_text(str(exc))}})
                first = None
            self._roots[parent] = first if isinstance(first, str) and first.isdigit() else parent
        return self._roots[parent]


class MastodonHashtagStream(CatchUpStream):
    """Server-sent events of `/api/v1/streaming/hashtag`: `update` and `status.update` (an edit) carry a
    status, `delete` the id of a deleted one."""

    rest: MastodonTimeline

    def __init__(self, rest: MastodonTimeline, every_s: float, streaming_url: Optional[str] = None) -> None:
        """`streaming_url`: servers that stream from another host name it in `/api/v1/instance` (`urls.streaming_api`)."""
        super().__init__(rest, every_s)
        self.streaming_url = (streaming_url or rest.url).rstrip("/")

    def connect(self) -> Iterator[Event]:
        tag = self.rest.timeline.partition(":")[2].lstrip("#")
        lines = self.rest.http.lines(f"{self.streaming_url}/api/v1/streaming/hashtag?tag={quote(tag)}", self.rest.headers)
        event = ""
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith(":"):
                yield None  # heartbeat comment
            elif text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:") and event in ("update", "status.update"):
                yield self._update(text[5:].strip(), line)
            elif text.startswith("data:") and event == "delete":
                yield self._delete(text[5:].strip(), line)
            elif not text:
                event = ""

    def _update(self, data: str, line: bytes) -> Event:
        try:
            status = safe_json.loads(data)
        except ValueError:
            status = None
        if not isinstance(status, dict):
            return None, Malformed(f"mastodon:{self.rest.url}/api/v1/streaming", "update event is not a JSON status", line)
        return self.rest.entry(status)

    def _delete(self, data: str, line: bytes) -> Event:
        """The payload is the bare status id (of a status published earlier: the mark stays)."""
        if not data.isdigit():
            return None, Malformed(f"mastodon:{self.rest.url}/api/v1/streaming", "delete event has no status id", line)
        return None, Deletion(self.rest.post_id(f"{self.rest.host}:{data}"), self.rest.kind)
