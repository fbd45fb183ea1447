"""The brand's own replies are read on X and Mastodon too, so a reply in a case's thread can answer the case.

X's search and stream return only tweets matching the team's query, and Mastodon's hashtag timelines only
statuses with the hashtag; the brand's replies usually have neither. With `brand_accounts` the X query
also names the brand's handles (`from:`) and Mastodon also reads the brand account's own timeline.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from connectors import config as connect_config
from connectors.base import Source
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient
from connectors.run import polling_sources
from connectors.testing import ListSink, poll
from core.config import Settings
from fake_apis import TOKENS, FakeApis

CUSTOMER_POST = {"x": "1986000000000000003", "mastodon": "113400000000000003"}  # a thread's first post, in the fixtures
X_BRAND = {"id": "7001", "username": "TelcoHilfe", "name": "Telco hilft",
           "public_metrics": {"followers_count": 5400, "following_count": 12, "tweet_count": 900, "listed_count": 3}}
X_REPLY = {"id": "1986000000000000020", "text": "@kunde_2 Das tut uns leid! Wir schauen uns den Anschluss an.",
           "created_at": "2026-11-05T09:20:00.000Z", "author_id": "7001", "conversation_id": CUSTOMER_POST["x"],
           "lang": "de", "edit_history_tweet_ids": ["1986000000000000020"], "in_reply_to_user_id": "5002",
           "referenced_tweets": [{"type": "replied_to", "id": CUSTOMER_POST["x"]}]}
MASTODON_BRAND = {"id": "950", "username": "telco_hilft", "acct": "telco_hilft", "display_name": "Telco hilft",
                  "locked": False, "bot": False, "created_at": "2024-01-01T00:00:00.000Z", "note": "",
                  "url": "https://social.example/@telco_hilft", "followers_count": 5400, "following_count": 12,
                  "statuses_count": 900}


def _status(native: str, html: str, reply_to: str | None, tags: list[str]) -> dict[str, Any]:
    """A public status by the brand account (Mastodon's Status entity)."""
    return {"id": native, "created_at": "2026-11-05T10:20:00.000Z", "in_reply_to_id": reply_to,
            "in_reply_to_account_id": "902" if reply_to else None, "sensitive": False, "spoiler_text": "",
            "visibility": "public", "language": "de", "uri": f"https://social.example/users/telco_hilft/statuses/{native}",
            "url": f"https://social.example/@telco_hilft/{native}", "replies_count": 0, "reblogs_count": 0,
            "favourites_count": 0, "edited_at": None, "content": html, "reblog": None, "account": MASTODON_BRAND,
            "media_attachments": [], "mentions": [], "emojis": [], "card": None, "poll": None,
            "tags": [{"name": t, "url": f"https://social.example/tags/{t}"} for t in tags]}


MASTODON_REPLY = _status("113400000000000020", "<p>Das tut uns leid! Wir schauen uns den Anschluss an.</p>",
                         CUSTOMER_POST["mastodon"], [])
MASTODON_TAGGED = _status("113400000000000021", '<p>Störung behoben. <a href="https://social.example/tags/telco" '
                          'class="mention hashtag" rel="tag">#<span>telco</span></a></p>', None, ["telco"])


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApis]:
    monkeypatch.setenv("T_X_TOKEN", TOKENS["x"])
    server = FakeApis()
    yield server
    server.close()


def sources(apis: FakeApis, api: str, **entry: Any) -> list[Source]:
    base = {"x": {"type": "x", "name": "x", "query": "@TelcoHilfe -is:retweet", "bearer_token_env": "T_X_TOKEN",
                  "api_url": f"{apis.url}/x"},
            "mastodon": {"type": "mastodon", "name": "masto", "url": f"{apis.url}/mastodon", "hashtags": ["#telco"]}}[api]
    cfg = connect_config.ConnectConfig.model_validate({"sources": [{**base, **entry}]}).sources[0]
    return polling_sources(cfg, HttpClient("triage-tests", backoff_s=0.01))


def read(found: list[Source], settings: Settings, tmp_path: Path, pages: int | None = None) -> list[dict[str, Any]]:
    """One pass of every source of an entry, as `triage connect --once` runs them, into one sink."""
    sink, store = ListSink(), CheckpointStore(str(tmp_path / "checkpoints.sqlite"))
    for source in found:
        poll(source, sink, settings.kafka, store, pages=pages)
    assert not sink.dead_letters
    return sink.posts


def test_x_reads_the_brands_replies_through_the_query_and_they_join_the_customers_thread(
        apis: FakeApis, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    apis.add_author("x", X_BRAND, [X_REPLY])
    with caplog.at_level(logging.WARNING, logger="connectors.run"):
        [search] = sources(apis, "x", brand_accounts=["@TelcoHilfe", "1234567890", "telcohilfe"])
    assert [r.getMessage() for r in caplog.records].count(
        "brand account ids are matched but not read; list their handles to read the brand's own posts") == 1
    posts = {p["id"]: p for p in read([search], settings, tmp_path)}
    [request] = [r for r in apis.requests if r.route == "/x/2/tweets/search/recent"]
    assert request.query["query"] == "(@TelcoHilfe -is:retweet) OR from:TelcoHilfe"  # the id is left out, once
    reply, customer = posts["twitter:1986000000000000020"], posts[f"twitter:{CUSTOMER_POST['x']}"]
    assert (reply["author"]["is_brand"], reply["author"]["role"], reply["author"]["handle"]) == (True, "brand", "TelcoHilfe")
    assert reply["thread_id"] == customer["thread_id"] == f"twitter:{CUSTOMER_POST['x']}"
    assert not customer["author"].get("is_brand")


def test_the_x_stream_rule_is_the_extended_query(apis: FakeApis, settings: Settings, tmp_path: Path) -> None:
    apis.add_author("x", X_BRAND, [X_REPLY])
    [stream] = sources(apis, "x", brand_accounts=["@TelcoHilfe", "@Telco_Team"], stream=True)
    posts = read([stream], settings, tmp_path, pages=2)  # the REST catch-up, then the stream opens
    extended = "(@TelcoHilfe -is:retweet) OR from:TelcoHilfe OR from:Telco_Team"
    assert [r["value"] for r in apis.rules if r["tag"] == "x"] == [extended]
    assert {r.query["query"] for r in apis.requests if r.route == "/x/2/tweets/search/recent"} == {extended}
    assert "twitter:1986000000000000020" in {p["id"] for p in posts}


def test_an_x_query_too_long_with_the_brand_accounts_is_a_config_error(apis: FakeApis) -> None:
    query = "Störung OR " * 91 + "Netz"  # 1,005 characters: fine alone
    assert len(sources(apis, "x", query=query)) == 1
    with pytest.raises(connect_config.ConnectConfigError, match="the query is 1026 characters, X allows 1024"):
        sources(apis, "x", query=query, brand_accounts=["@TelcoHilfe"])
    with pytest.raises(connect_config.ConnectConfigError, match="telco@social.example: not X usernames"):
        sources(apis, "x", brand_accounts=["telco@social.example"])
    assert not apis.requests  # refused before anything is read


def test_mastodon_reads_the_brand_accounts_timeline_and_delivers_each_status_once(
        apis: FakeApis, settings: Settings, tmp_path: Path) -> None:
    apis.add_author("mastodon", MASTODON_BRAND, [MASTODON_TAGGED, MASTODON_REPLY])
    apis.publish("mastodon", [MASTODON_TAGGED])  # with the hashtag: on the hashtag timeline too
    found = sources(apis, "mastodon", brand_accounts=["@telco_hilft"], backfill_pages=5)
    assert [s.name for s in found] == ["masto/tag:telco", "masto/account:telco_hilft"]
    posts = read(found, settings, tmp_path)
    assert "/mastodon/api/v1/accounts/950/statuses" in {r.route for r in apis.requests}
    assert [r.query["acct"] for r in apis.requests if r.route.endswith("/accounts/lookup")] == ["telco_hilft"]
    host = urlsplit(apis.url).netloc
    ids = [p["id"] for p in posts]
    for native in ("113400000000000020", "113400000000000021"):
        assert ids.count(f"mastodon:{host}:{native}") == 1
    by_id = {p["id"]: p for p in posts}
    reply, customer = by_id[f"mastodon:{host}:113400000000000020"], by_id[f"mastodon:{host}:{CUSTOMER_POST['mastodon']}"]
    assert reply["author"]["is_brand"] is True and not customer["author"].get("is_brand")
    assert reply["thread_id"] == customer["thread_id"] == f"mastodon:{host}:{CUSTOMER_POST['mastodon']}"


def test_a_brand_account_already_listed_is_read_once(apis: FakeApis) -> None:
    found = sources(apis, "mastodon", accounts=["telco_hilft"], brand_accounts=["@Telco_Hilft", "4711"])
    assert [s.name for s in found] == ["masto/tag:telco", "masto/account:telco_hilft"]
