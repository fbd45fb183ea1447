"""X (Twitter) API v2: recent search, and the filtered stream with the same query as its rule.

Search answers newest first; `since_id` bounds a round and `next_token` reads further back, and tweet
ids grow over time, so the id is the mark. The filtered stream sends one JSON object a line and blank
keep-alive lines; the source keeps one rule, tagged with the source name, equal to its query, and on
every (re)connect the recent search catches up from the mark. Retweets are skipped (the retweeter did
not write the text). Posts keep `source: twitter`, the name the models and routing rules know.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional
from urllib.parse import urlencode

from connectors.base import Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark
from connectors.streaming import CatchUpStream, Event
from core import safe_json

FIELDS = {"tweet.fields": "created_at,author_id,conversation_id,lang,referenced_tweets",
          "expansions": "author_id", "user.fields": "username,name,public_metrics"}
UNDETERMINED = {"und", "qme", "qht", "qam", "zxx"}  # X's codes for "no language"


class XRecentSearch(ListingSource):
    kind = "twitter"

    def __init__(self, name: str, api_url: str, query: str, every_s: float, http: HttpClient, bearer_token: str,
                 backfill_pages: int = 1) -> None:
        super().__init__(name, every_s, backfill_pages)
        self.api_url, self.query, self.http = api_url.rstrip("/"), query, http
        self.headers = {"Authorization": f"Bearer {bearer_token}"}

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        params = {"query": self.query, "max_results": "100", **FIELDS,
                  **({"since_id": str(mark)} if mark is not None else {}), **({"next_token": cursor} if cursor else {})}
        answer = json_body(self.http.get(f"{self.api_url}/2/tweets/search/recent?{urlencode(params)}", self.headers),
                           f"x search {self.name}")
        users = _users(answer)
        return Listing([self.entry(t, users) for t in answer.get("data") or []], (answer.get("meta") or {}).get("next_token"))

    def entry(self, tweet: Any, users: dict[str, dict[str, Any]]) -> tuple[Optional[Mark], Item]:
        native = tweet.get("id") if isinstance(tweet, dict) else None
        if not isinstance(native, str) or not native.isdigit() or not (tweet.get("text") or "").strip():
            return None, Malformed(f"twitter:{self.name}", "tweet has no id or text", json.dumps(tweet).encode())
        references = {r.get("type"): r.get("id") for r in tweet.get("referenced_tweets") or [] if isinstance(r, dict)}
        if "retweeted" in references:
            return int(native), None
        user = users.get(tweet.get("author_id") or "", {})
        handle, lang = user.get("username"), tweet.get("lang")
        return int(native), {
            "id": self.post_id(native), "source": self.kind, "text": tweet["text"].strip(),
            "url": f"https://x.com/{handle or 'i/web'}/status/{native}",
            "author": {"id": tweet.get("author_id"), "handle": handle, "name": user.get("name"),
                       "followers": (user.get("public_metrics") or {}).get("followers_count")},
            "created_at": tweet.get("created_at"),
            "lang_hint": lang if lang and lang not in UNDETERMINED else None,
            "thread_id": self.post_id(tweet["conversation_id"]) if tweet.get("conversation_id") else None,
            "reply_to_id": self.post_id(references["replied_to"]) if references.get("replied_to") else None,
            "metadata": {"query": self.query}}


def _users(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["id"]: u for u in (answer.get("includes") or {}).get("users") or [] if isinstance(u, dict) and "id" in u}


class XFilteredStream(CatchUpStream):
    rest: XRecentSearch

    def connect(self) -> Iterator[Event]:
        self._sync_rule()
        url = f"{self.rest.api_url}/2/tweets/search/stream?{urlencode(FIELDS)}"
        for line in self.rest.http.lines(url, self.rest.headers):
            if not line.strip():
                yield None  # keep-alive
                continue
            try:
                message = safe_json.loads(line)
            except ValueError:
                yield 0, Malformed(f"twitter:{self.name}/stream", "stream line is not JSON", line)
                continue
            if "data" not in message and message.get("errors"):  # e.g. operational-disconnect: reconnect
                raise ConnectionError(f"x stream: {message['errors'][0].get('title') or message['errors'][0]}")
            if not any(r.get("tag") == self.name for r in message.get("matching_rules") or []):
                yield None  # another source's rule on the same app
                continue
            mark, item = self.rest.entry(message.get("data"), _users(message))
            yield (mark if mark is not None else 0), item

    def _sync_rule(self) -> None:
        """Make the app's rules hold exactly one rule for this source: its query, tagged with its name."""
        rules_url = f"{self.rest.api_url}/2/tweets/search/stream/rules"
        current = json_body(self.rest.http.get(rules_url, self.rest.headers), "x stream rules").get("data") or []
        mine = [r for r in current if r.get("tag") == self.name]
        if [r.get("value") for r in mine] == [self.rest.query]:
            return
        headers = {**self.rest.headers, "Content-Type": "application/json"}
        if mine:
            json_body(self.rest.http.request("POST", rules_url, headers, body=json.dumps(
                {"delete": {"ids": [r["id"] for r in mine]}}).encode()), "x stream rules")
        json_body(self.rest.http.request("POST", rules_url, headers, body=json.dumps(
            {"add": [{"value": self.rest.query, "tag": self.name}]}).encode()), "x stream rules")
