"""Discourse, Mastodon, Reddit, X, Facebook and YouTube connectors against a local stand-in for each API.

The stand-in (tests/fake_apis.py) serves fixtures in each API's documented format with its own
pagination, rate-limit headers and error shapes. A first poll reads the newest page; after new items
appear, the next poll walks back through several pages to exactly where the last one stopped.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from connectors import config as connect_config
from connectors.base import Deletion, Malformed, Source
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient, SourceUnavailable
from connectors.run import polling_sources
from connectors.testing import ListSink, poll
from core.config import Settings
from fake_apis import TOKENS, FakeApis

SECRETS = {"T_REDDIT_ID": "app-id", "T_REDDIT_SECRET": "app-secret", "T_X_TOKEN": TOKENS["x"],
           "T_FB_TOKEN": TOKENS["graph"], "T_YT_KEY": TOKENS["youtube"]}


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApis]:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    server = FakeApis()
    yield server
    server.close()


def entries(url: str) -> dict[str, dict[str, Any]]:
    """sources.yaml entries pointing at the stand-in."""
    return {
        "discourse": {"type": "discourse", "name": "forum", "url": f"{url}/discourse", "categories": [5]},
        "mastodon": {"type": "mastodon", "name": "masto", "url": f"{url}/mastodon", "hashtags": ["#telco"]},
        "reddit": {"type": "reddit", "name": "reddit", "subreddits": ["de"], "client_id_env": "T_REDDIT_ID",
                   "client_secret_env": "T_REDDIT_SECRET", "api_url": f"{url}/reddit",
                   "auth_url": f"{url}/reddit/api/v1/access_token"},
        "x": {"type": "x", "name": "x", "query": "@TelcoHilfe -is:retweet", "bearer_token_env": "T_X_TOKEN",
              "api_url": f"{url}/x"},
        "facebook": {"type": "facebook", "name": "fb", "page_id": "104200000000", "page_token_env": "T_FB_TOKEN",
                     "api_url": f"{url}/graph", "comments_days": 100000},
        "youtube": {"type": "youtube", "name": "yt", "channel_id": "UCtelco", "api_key_env": "T_YT_KEY",
                    "api_url": f"{url}/youtube"},
    }


def build(apis: FakeApis, api: str, sleep: list[float] | None = None, **changes: Any) -> list[Source]:
    entry = {**entries(apis.url)[api], **changes}
    cfg = connect_config.ConnectConfig.model_validate({"sources": [entry]}).sources[0]
    http = HttpClient("triage-tests", backoff_s=0.01, sleep=(sleep if sleep is not None else []).append)
    return polling_sources(cfg, http)


class Poller:
    """Polls a source through the real runner (connectors.base.run_polling) into a ListSink, with its own checkpoints."""

    def __init__(self, source: Source, settings: Settings, tmp_path: Path) -> None:
        self.source, self.kafka = source, settings.kafka
        self.store = CheckpointStore(str(tmp_path / f"checkpoints-{id(self)}.sqlite"))
        self.sink = ListSink()
        self.deletions: list[Deletion] = []  # the deletion records delivered, every pass so far

    def poll(self, pages: int = 100) -> tuple[list[dict], list[Malformed], int]:
        """One pass (at most `pages` pages): the posts and malformed items it delivered, and how many it skipped."""
        self.sink.clear()
        done = poll(self.source, self.sink, self.kafka, self.store, pages=pages)
        records = self.sink.sent.get(self.kafka.topics.raw, [])
        posts = [r for r in records if r.get("kind") != "deletion"]
        self.deletions += [Deletion(r["id"], r["source"], r["deleted_at"]) for r in records if r.get("kind") == "deletion"]
        letters = self.sink.sent.get(self.kafka.topics.dead_letter, [])
        assert not [d for d in letters if d.reason.startswith(("not a valid Post", "not a valid deletion"))], letters  # all fit their schema
        assert all(d.reason_code == "malformed_source_item" for d in letters)
        return posts, [Malformed(d.origin, d.reason, d.payload) for d in letters], done.skipped


@pytest.fixture
def make_poller(settings: Settings, tmp_path: Path) -> Callable[[Source], Poller]:
    return lambda source: Poller(source, settings, tmp_path)


def _short(post_id: str) -> str:
    return post_id.split(":")[-1].split("/t/")[-1]


# api (source index) -> newest page at the first poll; the new items the second poll finds; skipped; malformed reasons;
# deletions (the source's ids of removed or deleted items it listed)
CASES = {
    ("discourse", 0): (["40/2", "40/1", "39/1"], ["42/3", "42/2", "42/1"], 3, []),
    ("mastodon", 0): (["113400000000000004", "113400000000000003", "113400000000000002"],
                      ["113400000000000011", "113400000000000010", "113400000000000007", "113400000000000006"], 2,
                      ["status has no id"]),
    ("reddit/new", 0): (["t3_1ab04", "t3_1ab03", "t3_1ab02"], ["t3_1ab11", "t3_1ab09", "t3_1ab07", "t3_1ab06"], 1,
                        ["item is not a post or comment with an id"]),
    ("reddit/comments", 1): (["t1_9zz04", "t1_9zz03", "t1_9zz02"], ["t1_9zz11", "t1_9zz10", "t1_9zz08", "t1_9zz07"], 0, []),
    ("x", 0): (["1986000000000000004", "1986000000000000003", "1986000000000000002"],
               ["1986000000000000011", "1986000000000000010", "1986000000000000007", "1986000000000000006",
                "1986000000000000005"], 1, ["tweet has no id or text"]),
    ("graph", 0): (["104200000000_904", "104200000000_902"],
                   ["104200000000_909", "104200000000_907", "104200000000_906", "104200000000_905"], 1,
                   ["item has no id or created_time"]),
    ("graph/comments", 1): (["904_7002", "904_7001", "902_7003"], ["904_7012", "904_7011", "904_7009", "902_7008"], 1, []),
    ("youtube", 0): (["UgzThread004", "UgzThread003", "UgzThread002"],
                     ["UgzThread011", "UgzThread011.reply0", "UgzThread010", "UgzThread009", "UgzThread007",
                      "UgzThread005"], 1, ["comment has no id or publishedAt"]),
}
DELETED = {"discourse": ["40/3"], "reddit/new": ["t3_1ab10"], "reddit/comments": ["t1_9zz09"]}
CONFIG = {"reddit/new": "reddit", "reddit/comments": "reddit", "graph": "facebook", "graph/comments": "facebook"}


@pytest.mark.parametrize("listing,index", list(CASES), ids=[c[0] for c in CASES])
def test_a_poll_reads_back_exactly_to_where_the_last_one_stopped(apis: FakeApis, make_poller, listing: str,  # type: ignore[no-untyped-def]
                                                                 index: int) -> None:
    first, later, skipped, reasons = CASES[(listing, index)]
    deleted = DELETED.get(listing, [])
    slept: list[float] = []
    poller = make_poller(build(apis, CONFIG.get(listing, listing), slept)[index])
    posts, bad, _ = poller.poll()
    assert [_short(p["id"]) for p in posts] == first  # a new source starts at the newest page
    apis.publish(listing)
    apis.fail_next(listing.split("/")[0], 503)  # one bad minute: retried
    requests_before = len(apis.requests)
    posts, bad, skipped_now = poller.poll()
    assert [_short(p["id"]) for p in posts] == later
    assert skipped_now >= skipped and sorted(b.reason for b in bad) == reasons
    assert [_short(d.post_id) for d in poller.deletions] == deleted  # a deletion is reported, not skipped
    assert len(apis.requests) - requests_before >= 3 and slept  # several pages, and the 503 was waited out
    posts, bad, _ = poller.poll()
    assert (posts, bad) == ([], [])  # nothing new: nothing delivered twice


def test_fields_map_to_the_post_schema_with_threads_replies_and_unicode(apis: FakeApis, make_poller) -> None:  # type: ignore[no-untyped-def]
    pollers = {name: make_poller(build(apis, name)[0]) for name in ("discourse", "mastodon", "x", "youtube")}
    for name in ("discourse", "mastodon", "x", "youtube"):
        pollers[name].poll()
        apis.publish(name)
    found = {name: {_short(p["id"]): p for p in poller.poll()[0]} for name, poller in pollers.items()}

    reply = found["discourse"]["42/3"]
    assert reply["reply_to_id"].endswith("/t/42/2") and reply["thread_id"].endswith("/t/42/1")
    assert reply["text"] == "Ich kündige zum Monatsende, euer Service ist eine Katastrophe 😡"
    assert reply["url"] == f"{apis.url}/discourse/t/thema-42/42/3" and reply["author"]["handle"] == "user111"
    assert found["discourse"]["42/1"]["title"] == "Störung im Netz (42)"

    toot = found["mastodon"]["113400000000000011"]
    assert toot["text"] == "Ich kündige zum Monatsende, euer Service ist eine Katastrophe 😡 #telco"
    assert toot["reply_to_id"].endswith(":113400000000000003") and toot["lang_hint"] == "de"
    assert toot["author"] == {"id": "902", "handle": "kunde2@social.example", "name": "Kundin 2 🌻", "followers": 120}
    assert found["mastodon"]["113400000000000007"]["title"] == "Lieferung"  # the content warning

    tweet = found["x"]["1986000000000000011"]
    assert tweet["reply_to_id"] == "twitter:1986000000000000003" and tweet["thread_id"] == "twitter:1986000000000000003"
    assert tweet["author"] == {"id": "5005", "handle": "kunde_5", "name": "Kunde 5 📡", "followers": 50}
    assert tweet["url"] == "https://x.com/kunde_5/status/1986000000000000011" and tweet["source"] == "twitter"
    assert found["x"]["1986000000000000007"]["lang_hint"] is None  # "und"

    answer = found["youtube"]["UgzThread011.reply0"]
    assert answer["reply_to_id"] == "youtube:UgzThread011" and answer["thread_id"] == "youtube:UgzThread011"
    assert answer["url"] == "https://www.youtube.com/watch?v=vid2&lc=UgzThread011.reply0"
    assert answer["created_at"] == "2026-11-05T08:11:30Z"


@pytest.mark.parametrize("api,status,headers,expected", [
    ("discourse", 429, {"Retry-After": "7"}, 7),
    ("reddit", 429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "12"}, 12),
    ("x", 429, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "+20"}, 20),
    ("mastodon", 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "+30"}, 30),
])
def test_429_waits_as_long_as_the_api_says(apis: FakeApis, make_poller, api: str, status: int,  # type: ignore[no-untyped-def]
                                           headers: dict[str, str], expected: float) -> None:
    now = time.time()
    if headers.get("x-rate-limit-reset") == "+20":  # X: epoch seconds
        headers = {**headers, "x-rate-limit-reset": str(int(now) + 20)}
    if headers.get("X-RateLimit-Reset") == "+30":  # Mastodon: an ISO 8601 time
        headers = {**headers, "X-RateLimit-Reset": datetime.fromtimestamp(now + 30, timezone.utc).isoformat()}
    slept: list[float] = []
    source = build(apis, api, slept)[0]
    apis.fail_next(api, status, headers)
    posts, _, _ = make_poller(source).poll()
    assert posts and slept and abs(max(slept) - expected) <= 2


def test_credentials_are_refused_with_a_clear_reason_and_never_stored(apis: FakeApis,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_X_TOKEN", "expired")
    with pytest.raises(SourceUnavailable, match=r"HTTP 401: Unauthorized \(check the credentials"):
        build(apis, "x")[0].fetch({})
    monkeypatch.setenv("T_FB_TOKEN", "revoked")
    with pytest.raises(SourceUnavailable, match="page token was rejected"):
        build(apis, "facebook")[0].fetch({})
    monkeypatch.setenv("T_FB_TOKEN", TOKENS["graph"])
    posts = build(apis, "facebook", backfill_pages=2)[0]
    page = posts.fetch({})
    assert page.more and "access_token" not in page.state["cursor"]  # the checkpoint file never holds a token


def test_streams_deliver_pushed_items_and_catch_up_after_a_disconnect(apis: FakeApis, make_poller) -> None:  # type: ignore[no-untyped-def]
    mastodon = build(apis, "mastodon", stream=True, streaming_url=f"{apis.url}/mastodon")[0]
    x = build(apis, "x", stream=True)[0]
    for source, api, streamed, missed in (
            (mastodon, "mastodon", ["113400000000000012", "113400000000000013"], ["113400000000000015", "113400000000000014"]),
            (x, "x", ["1986000000000000012", "1986000000000000013"], ["1986000000000000021"])):
        stream = make_poller(source)
        posts, _, _ = stream.poll(pages=1)  # catch-up through REST, then the stream opens
        assert len(posts) == 3
        received: list[str] = []
        with pytest.raises(SourceUnavailable, match="closed by the server"):
            for _ in range(20):
                received += [_short(p["id"]) for p in stream.poll(pages=1)[0]]
        assert received == streamed  # heartbeats and the delete event deliver nothing
        if api == "mastodon":
            apis.publish(api, apis.fixtures["mastodon"]["missed_while_disconnected"])
        else:
            apis.publish(api, [{**apis.fixtures["x"]["streamed"][0], "id": "1986000000000000021",
                                "edit_history_tweet_ids": ["1986000000000000021"]}])
        caught_up = [_short(p["id"]) for p in stream.poll(pages=1)[0]]
        assert caught_up == missed  # published while disconnected: found by the REST catch-up
    assert [r["value"] for r in apis.rules if r["tag"] == "x"] == ["@TelcoHilfe -is:retweet"]  # the rule was replaced


def test_sources_file_names_missing_credentials_and_empty_timelines(apis: FakeApis, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import yaml
    monkeypatch.delenv("T_YT_KEY")
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [entries(apis.url)["youtube"]]}))
    with pytest.raises(connect_config.ConnectConfigError, match=r"T_YT_KEY is not set \(api_key_env\)"):
        connect_config.load(str(path))
    path.write_text(yaml.safe_dump({"sources": [{"type": "mastodon", "name": "m", "url": "https://social.example"}]}))
    with pytest.raises(connect_config.ConnectConfigError, match="hashtags, accounts"):
        connect_config.load(str(path))
