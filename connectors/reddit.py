"""Reddit: new posts and new comments of subreddits, with an OAuth application (client credentials).

Listings (`/r/NAME/new`, `/r/NAME/comments`) come newest first with `after=<fullname>` to read
further back. Reddit ids are base 36 and grow over time, so the decoded id is the mark. The token is
fetched with the app's id and secret and renewed before it expires or when the API answers 401.
A removed or deleted item (body "[removed]"/"[deleted]", `removed_by_category`) becomes a Deletion; an item
whose author deleted their account is skipped. A comment's thread is its post (`link_id`), whose title
travels as `metadata.link_title`; `distinguished` (a moderator or admin speaking as such) marks the author
as the brand's; `edited` (false, or the edit's epoch time) sets `edited_at`.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Optional

from connectors.base import Deletion, Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark, epoch_mark

PAGE_SIZE = 100
GONE = {"[deleted]", "[removed]"}
ROLES = {"moderator", "admin"}  # `distinguished` values that speak for the community's owners



class RedditToken:
    """One application token, shared by all listings of a source and renewed a minute before expiry."""

    def __init__(self, auth_url: str, client_id: str, client_secret: str, http: HttpClient) -> None:
        self.auth_url, self.http = auth_url, http
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._token, self._expires, self._lock = "", 0.0, threading.Lock()

    def header(self, renew: bool = False) -> dict[str, str]:
        with self._lock:
            if renew or time.time() > self._expires - 60:
                answer = json_body(self.http.request("POST", self.auth_url, {"Authorization": f"Basic {self._basic}"},
                                                     fields={"grant_type": "client_credentials"}), "reddit token")
                self._token, self._expires = answer["access_token"], time.time() + float(answer.get("expires_in", 3600))
            return {"Authorization": f"bearer {self._token}"}


class RedditListing(ListingSource):
    kind = "reddit"

    def __init__(self, name: str, api_url: str, subreddit: str, what: str, every_s: float, http: HttpClient,
                 token: RedditToken, backfill_pages: int = 1) -> None:
        """`what` is "new" (posts) or "comments"."""
        super().__init__(name, every_s, backfill_pages)
        self.api_url, self.subreddit, self.what, self.http, self.token = api_url.rstrip("/"), subreddit, what, http, token

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        url = f"{self.api_url}/r/{self.subreddit}/{self.what}?limit={PAGE_SIZE}&raw_json=1" + (f"&after={cursor}" if cursor else "")
        response = self.http.get(url, self.token.header())
        if response.status == 401:  # revoked or expired early
            response = self.http.get(url, self.token.header(renew=True))
        data = (json_body(response, f"reddit r/{self.subreddit}/{self.what}") or {}).get("data") or {}
        children = data.get("children")
        if not isinstance(children, list):
            raise ValueError(f"reddit r/{self.subreddit}/{self.what}: the answer is not a Listing")
        return Listing([self._entry(child) for child in children], data.get("after"))

    def _entry(self, child: Any) -> tuple[Optional[Mark], Item]:
        data = child.get("data") if isinstance(child, dict) else None
        native = data.get("id") if isinstance(data, dict) else None
        if not isinstance(native, str) or not native.isalnum() or child.get("kind") not in ("t1", "t3"):
            return None, Malformed(f"reddit:r/{self.subreddit}/{self.what}", "item is not a post or comment with an id",
                                   json.dumps(child).encode())
        return int(native, 36), self._post(child["kind"], data)

    def _post(self, kind: str, data: dict[str, Any]) -> Item:
        body = (data.get("selftext") if kind == "t3" else data.get("body")) or ""
        fullname = data.get("name") or f"{kind}_{data['id']}"
        if body.strip() in GONE or data.get("removed_by_category"):
            return Deletion(self.post_id(fullname), self.kind)  # Reddit does not say when
        if data.get("author") in GONE:
            return None  # the author's account is gone: no one to answer
        title = data.get("title") if kind == "t3" else None
        text = body.strip() or (title or "").strip()
        if not text:
            return None
        thread = data.get("link_id") if kind == "t1" else fullname
        role = data.get("distinguished") if data.get("distinguished") in ROLES else None
        metadata = {"subreddit": data.get("subreddit") or self.subreddit}
        if kind == "t1" and data.get("link_title"):
            metadata["link_title"] = data["link_title"]
        return {"id": self.post_id(fullname), "source": self.kind, "text": text,
                "title": title, "url": f"https://www.reddit.com{data['permalink']}" if data.get("permalink") else None,
                "author": {"handle": data.get("author"), "name": data.get("author"), "id": data.get("author_fullname"),
                           "is_brand": True if role else None, "role": role},
                "created_at": epoch_mark(data.get("created_utc")), "edited_at": epoch_mark(data.get("edited")),
                "thread_id": self.post_id(thread) if thread else None,
                "reply_to_id": self.post_id(data["parent_id"]) if kind == "t1" and data.get("parent_id") else None,
                "metadata": metadata}
