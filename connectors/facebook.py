"""Facebook Pages: the page's posts and the comments under them, through the Graph API with a page token.

The feed lists posts newest first; `paging.next` is the cursor (stored without the token, which travels
in the Authorization header and never reaches the checkpoint file). The creation time is the mark.
The Graph API has no page-wide comment listing, so the comments source reads, for each post of the
last `comments_days`, its newest comments (`filter=stream`, newest first) down to the mark.
Posts without a message (a photo, a shared link) are skipped; so are comments that were hidden.
What the page itself wrote (`from.id` = the page id: its posts, its answers in the comments) is the
brand's (`author.role` "owner"). A post's `updated_time` later than its creation sets `edited_at`; the
Graph API also moves it when a post gets a new comment, so a page post may be delivered again as a new
version after a comment: harmless, the version replaces the one before. Comments have no such field.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connectors.base import Malformed, Page, Source
from connectors.http import HttpClient, SourceUnavailable, json_body
from connectors.listing import Item, Listing, ListingSource, Mark

POST_FIELDS = "id,message,created_time,updated_time,permalink_url,from{id,name}"
COMMENT_FIELDS = "id,message,created_time,permalink_url,from{id,name},parent{id},is_hidden"
TOKEN_ERRORS = {190}  # expired or revoked token
RATE_LIMIT_ERRORS = {4, 17, 32, 613}


def utc(graph_time: Optional[str]) -> Optional[str]:
    """Graph times ("2026-11-03T08:15:00+0000") as RFC 3339 UTC, so they compare as text."""
    if not graph_time:
        return None
    try:
        return datetime.strptime(graph_time, "%Y-%m-%dT%H:%M:%S%z").astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _without_token(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "access_token"])))


class GraphClient:
    def __init__(self, api_url: str, page_token: str, http: HttpClient) -> None:
        self.api_url, self.http = api_url.rstrip("/"), http
        self.headers = {"Authorization": f"Bearer {page_token}"}

    def get(self, path_or_url: str, what: str) -> dict[str, Any]:
        url = path_or_url if path_or_url.startswith("http") else f"{self.api_url}/{path_or_url}"
        response = self.http.get(url, self.headers)
        if response.status >= 400:
            try:
                code = json.loads(response.body).get("error", {}).get("code")
            except (ValueError, AttributeError):
                code = None
            if code in TOKEN_ERRORS:
                raise SourceUnavailable(f"{what}: the page token was rejected (Graph error 190); renew it")
            if code in RATE_LIMIT_ERRORS:
                raise SourceUnavailable(f"{what}: Graph API rate limit reached (error {code}); trying again next poll")
        return json_body(response, what)


def _entry(kind: str, raw: Any, position: str, thread: Optional[str], page_id: str) -> tuple[Optional[Mark], Item]:
    created = utc(raw.get("created_time")) if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not raw.get("id") or created is None:
        return None, Malformed(position, "item has no id or created_time", json.dumps(raw).encode())
    if not (raw.get("message") or "").strip() or raw.get("is_hidden"):
        return created, None
    author = raw.get("from") or {}
    page = author.get("id") == page_id
    parent = (raw.get("parent") or {}).get("id") or thread
    updated = utc(raw.get("updated_time"))
    return created, {"id": f"{kind}:{raw['id']}", "source": kind, "text": raw["message"].strip(),
                     "url": raw.get("permalink_url"),
                     "author": {"id": author.get("id"), "name": author.get("name"),
                                "is_brand": True if page else None, "role": "owner" if page else None},
                     "created_at": created, "edited_at": updated if updated and updated > created else None,
                     "thread_id": f"{kind}:{thread or raw['id']}",
                     "reply_to_id": f"{kind}:{parent}" if parent else None, "metadata": {"graph_id": raw["id"]}}


class FacebookPagePosts(ListingSource):
    kind = "facebook"

    def __init__(self, name: str, graph: GraphClient, page_id: str, every_s: float, backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.graph, self.page_id = graph, page_id

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        answer = self.graph.get(cursor or f"{self.page_id}/feed?{urlencode({'fields': POST_FIELDS, 'limit': 100})}",
                                f"facebook page {self.page_id} feed")
        posts = answer.get("data") or []
        following = (answer.get("paging") or {}).get("next")
        return Listing([_entry(self.kind, p, f"facebook:{self.page_id}/feed", None, self.page_id) for p in posts],
                       _without_token(following) if following and posts else None)


class FacebookPageComments(Source):
    kind = "facebook"

    def __init__(self, name: str, graph: GraphClient, page_id: str, every_s: float, comments_days: float = 3) -> None:
        super().__init__(name, every_s)
        self.graph, self.page_id, self.comments_days = graph, page_id, comments_days

    def fetch(self, state: dict[str, Any]) -> Page:
        mark, top, items, skipped = state.get("mark"), state.get("mark"), [], 0
        for post_id in self._recent_posts():
            url: Optional[str] = f"{post_id}/comments?" + urlencode(
                {"fields": COMMENT_FIELDS, "filter": "stream", "order": "reverse_chronological", "limit": 100})
            while url:
                answer = self.graph.get(url, f"facebook comments of {post_id}")
                entries = [_entry(self.kind, c, f"facebook:{post_id}/comments", post_id, self.page_id)
                           for c in answer.get("data") or []]
                fresh = [(m, i) for m, i in entries if mark is None or m is None or m >= mark]
                items += [i for _, i in fresh if i is not None]
                skipped += sum(1 for _, i in fresh if i is None)
                top = max([m for m, _ in entries if m] + ([top] if top else []), default=None)
                following = (answer.get("paging") or {}).get("next")
                url = following if following and mark is not None and len(fresh) == len(entries) else None
        return Page(items, {"mark": top}, skipped=skipped)

    def _recent_posts(self) -> list[str]:
        since = int(time.time() - self.comments_days * 86400)
        url: Optional[str] = f"{self.page_id}/feed?" + urlencode({"fields": "id", "since": since, "limit": 100})
        ids: list[str] = []
        while url:
            answer = self.graph.get(url, f"facebook page {self.page_id} feed")
            ids += [p["id"] for p in answer.get("data") or [] if isinstance(p, dict) and p.get("id")]
            url = (answer.get("paging") or {}).get("next") if answer.get("data") else None
        return ids
