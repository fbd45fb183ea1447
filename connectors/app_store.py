"""Apple App Store: the customer reviews of one app in one storefront, from Apple's public reviews feed.

`https://itunes.apple.com/{country}/rss/customerreviews/page={n}/id={app}/sortby=mostrecent/json` lists
reviews newest first, 50 a page, pages 1 to 10 and no further (older reviews are not served), so the page
number is the cursor and the review's `updated` time the mark. Each entry carries the rating
(`im:rating`), the app version reviewed (`im:version`), a title, the text, the author's name and the
review id. No key is needed. `updated` is the time the review was written or last changed: it is the
post's `created_at`, as the feed keeps no other.

What the public feed lacks: the device and OS, the review language, and the developer's response (that
is only in the App Store Connect API, `customerReviews/{id}/response`, with a team key). So a review's
reply state is reported as unknown (`metadata.reply_state: "unknown"`), never as unanswered.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from connectors.base import Malformed
from connectors.http import HttpClient, SourceUnavailable, json_body
from connectors.listing import Item, Listing, ListingSource, Mark, utc_mark

LAST_PAGE = 10  # the feed serves no page after the tenth


class AppStoreReviews(ListingSource):
    kind = "app_store"

    def __init__(self, name: str, app_id: str, country: str, every_s: float, http: HttpClient,
                 feed_url: str = "https://itunes.apple.com", backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.app_id, self.country, self.http, self.feed_url = app_id, country, http, feed_url.rstrip("/")

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        page = int(cursor or 1)
        what = f"app_store app {self.app_id} ({self.country})"
        url = f"{self.feed_url}/{self.country}/rss/customerreviews/page={page}/id={self.app_id}/sortby=mostrecent/json"
        feed = json_body(self.http.get(url, {"Accept": "application/json"}), what)
        if not isinstance(feed, dict) or not isinstance(feed.get("feed"), dict):
            raise SourceUnavailable(f"{what}: the answer is not a reviews feed")
        entries = feed["feed"].get("entry") or []
        entries = [entries] if isinstance(entries, dict) else entries  # one review comes as an object, not a list
        listed = [self._entry(raw) for raw in entries if not (isinstance(raw, dict) and "im:name" in raw)]  # app info
        return Listing(listed, str(page + 1) if listed and page < LAST_PAGE else None)

    def _entry(self, raw: Any) -> tuple[Optional[Mark], Item]:
        updated = utc_mark(_label(raw, "updated"))
        review_id = _label(raw, "id")
        if not updated or not review_id:
            return updated, Malformed(f"app_store:{self.country}/id{self.app_id}", "review has no id or updated time",
                                      json.dumps(raw).encode())
        text = (_label(raw, "content") or "").strip()
        if not text:
            return updated, None
        rating = _label(raw, "im:rating")
        author = raw.get("author") if isinstance(raw.get("author"), dict) else {}
        return updated, {
            "id": self.post_id(review_id), "source": self.kind, "text": text, "title": _label(raw, "title"),
            "url": f"https://apps.apple.com/{self.country}/app/id{self.app_id}?see-all=reviews",
            "author": {"name": _label(author, "name"), "is_brand": False},  # reviews are written by customers
            "created_at": updated, "thread_id": self.post_id(review_id),
            "metadata": {"app_id": self.app_id, "country": self.country,
                         "rating": int(rating) if rating and rating.isdigit() else None,
                         "app_version": _label(raw, "im:version"), "reply_state": "unknown"}}


def _label(node: Any, key: str) -> Optional[str]:
    """The feed's `{"key": {"label": value}}` shape."""
    value = node.get(key) if isinstance(node, dict) else None
    label = value.get("label") if isinstance(value, dict) else None
    return label if isinstance(label, str) else None
