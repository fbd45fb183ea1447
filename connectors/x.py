"""X (Twitter) API v2: recent search, and the filtered stream with the same query as its rule.

Search answers newest first; `since_id` bounds a round and `next_token` reads further back, and tweet
ids grow over time, so the id is the mark. The filtered stream sends one JSON object a line and blank
keep-alive lines; the source keeps one rule, tagged with the source name, equal to its query, and on
every (re)connect the recent search catches up from the mark. Retweets are skipped (the retweeter did
not write the text). Posts keep `source: twitter`, the name the models and routing rules know.

The text is what a person reads: X escapes `&`, `<` and `>` as HTML entities, shortens every link to a
t.co URL (expanded from `entities.urls`; a link to the post's own photo is dropped) and cuts posts longer
than 280 characters (the whole text is in `note_tweet`). A post that is only an image is its images'
alt texts, or skipped without them. The quoted post's text travels as `metadata.quoted_text`. An edit
is a new tweet id listing the original first in `edit_history_tweet_ids`: it keeps the original's post id
and sets `edited_at`, so it replaces the earlier version. A compliance `delete` event on the stream
(Enterprise apps get them) becomes a Deletion.

The brand's replies answer cases but seldom match the team's query, so with `brand_accounts` the query (and
with it the stream rule) also reads their own tweets: `(<query>) OR from:<handle> ...` (`with_brand_posts`).
"""
from __future__ import annotations

import html
import json
import re
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import urlencode

from connectors.base import Deletion, Malformed
from connectors.http import HttpClient, json_body
from connectors.listing import Item, Listing, ListingSource, Mark
from connectors.streaming import CatchUpStream, Event
from core import safe_json

FIELDS = {"tweet.fields": "created_at,author_id,conversation_id,lang,referenced_tweets,entities,note_tweet,"
                          "edit_history_tweet_ids,attachments",
          "expansions": "author_id,referenced_tweets.id,attachments.media_keys",
          "user.fields": "username,name,public_metrics", "media.fields": "alt_text,type"}
UNDETERMINED = {"und", "qme", "qht", "qam", "zxx"}  # X's codes for "no language"
MAX_QUERY_CHARS = 1024  # what sources.yaml allows a query (connectors/config.py); a stream rule's value is the query
_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,15}$")


def with_brand_posts(query: str, handles: Sequence[str]) -> str:
    """The team's query widened to the brand accounts' own tweets, so their replies are read and answer the cases
    they are in. `from:` takes usernames (without `@`), never ids. Raises ValueError when a handle is not an X
    username or the query grows past what X accepts (it would be refused on every poll)."""
    if not handles:
        return query
    unusable = [h for h in handles if not _USERNAME.match(h)]
    if unusable:
        raise ValueError(f"brand_accounts {', '.join(unusable)}: not X usernames (letters, digits, _; at most 15)")
    extended = f"({query}) OR " + " OR ".join(f"from:{h}" for h in handles)
    if len(extended) > MAX_QUERY_CHARS:
        raise ValueError(f"with the brand accounts' from: operators the query is {len(extended)} characters, X allows "
                         f"{MAX_QUERY_CHARS}; shorten the query or list fewer brand_accounts")
    return extended


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
        includes = Includes(answer)
        return Listing([self.entry(t, includes) for t in answer.get("data") or []], (answer.get("meta") or {}).get("next_token"))

    def entry(self, tweet: Any, includes: "Includes") -> tuple[Optional[Mark], Item]:
        native = tweet.get("id") if isinstance(tweet, dict) else None
        if not isinstance(native, str) or not native.isdigit() or not isinstance(tweet.get("text"), str):
            return None, Malformed(f"twitter:{self.name}", "tweet has no id or text", json.dumps(tweet).encode())
        references = {r.get("type"): r.get("id") for r in tweet.get("referenced_tweets") or [] if isinstance(r, dict)}
        if "retweeted" in references:
            return int(native), None
        text = readable_text(tweet) or includes.alt_texts(tweet)
        if not text:
            return int(native), None  # an image without alt text
        history = [i for i in tweet.get("edit_history_tweet_ids") or [] if isinstance(i, str) and i.isdigit()]
        original = history[0] if history else native
        user = includes.users.get(tweet.get("author_id") or "", {})
        handle, lang = user.get("username"), tweet.get("lang")
        quoted = includes.tweets.get(references.get("quoted") or "")
        return int(native), {
            "id": self.post_id(original), "source": self.kind, "text": text,
            "url": f"https://x.com/{handle or 'i/web'}/status/{native}",
            "author": {"id": tweet.get("author_id"), "handle": handle, "name": user.get("name"),
                       "followers": (user.get("public_metrics") or {}).get("followers_count")},
            "created_at": tweet.get("created_at"),
            "edited_at": tweet.get("created_at") if original != native else None,  # a version's time is its edit's
            "lang_hint": lang if lang and lang not in UNDETERMINED else None,
            "thread_id": self.post_id(tweet["conversation_id"]) if tweet.get("conversation_id") else None,
            "reply_to_id": self.post_id(references["replied_to"]) if references.get("replied_to") else None,
            "metadata": {"query": self.query, **({"quoted_text": readable_text(quoted)} if quoted else {})}}


def readable_text(tweet: dict[str, Any]) -> str:
    """The whole text (a long post's `note_tweet`) with entities decoded and t.co links expanded."""
    note = tweet.get("note_tweet") if isinstance(tweet.get("note_tweet"), dict) else {}
    source = note if isinstance(note.get("text"), str) else tweet
    text = html.unescape(source.get("text") or "")
    for link in (source.get("entities") or {}).get("urls") or []:
        if isinstance(link, dict) and isinstance(link.get("url"), str):
            shown = "" if link.get("media_key") else (link.get("expanded_url") or link.get("display_url") or link["url"])
            text = text.replace(link["url"], shown)
    return text.strip()


class Includes:
    """The answer's `includes`: authors, referenced (quoted) tweets and media, by id."""

    def __init__(self, answer: dict[str, Any]) -> None:
        included = answer.get("includes") if isinstance(answer.get("includes"), dict) else {}
        self.users, self.tweets, self.media = ({i[key]: i for i in included.get(part) or [] if isinstance(i, dict) and key in i}
                                               for part, key in (("users", "id"), ("tweets", "id"), ("media", "media_key")))

    def alt_texts(self, tweet: dict[str, Any]) -> str:
        keys = (tweet.get("attachments") or {}).get("media_keys") or []
        return "\n".join(self.media[k]["alt_text"].strip() for k in keys
                         if isinstance(self.media.get(k, {}).get("alt_text"), str) and self.media[k]["alt_text"].strip())


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
                yield None, Malformed(f"twitter:{self.name}/stream", "stream line is not JSON", line)
                continue
            if "data" not in message and message.get("errors"):  # e.g. operational-disconnect: reconnect
                raise ConnectionError(f"x stream: {message['errors'][0].get('title') or message['errors'][0]}")
            deleted = ((message.get("data") or {}).get("delete") or {}) if isinstance(message.get("data"), dict) else {}
            if isinstance((deleted.get("tweet") or {}).get("id"), str):  # a compliance event: not rule-tagged
                yield None, Deletion(self.rest.post_id(deleted["tweet"]["id"]), self.rest.kind, deleted.get("event_at"))
                continue
            if not any(r.get("tag") == self.name for r in message.get("matching_rules") or []):
                yield None  # another source's rule on the same app
                continue
            yield self.rest.entry(message.get("data"), Includes(message))

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
