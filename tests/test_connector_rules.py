"""The rules every connector shares (connectors/base.py, listing.py, checkpoint.py, config.py), through the real
runner with a ListSink in place of Kafka: URLs never cost a post, a pinned item does not end a listing walk, a
malformed item is dead-lettered once, edits and deletions travel, brand accounts from sources.yaml are marked."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, get_args

import pytest
import yaml

import schemas
from connectors import config as connect_config
from connectors.base import Deletion, Malformed, Post, run_polling
from connectors.checkpoint import CheckpointStore
from connectors.http import HttpClient
from connectors.listing import Listing, ListingSource, Mark
from connectors.run import polling_sources, run
from connectors.testing import ListSink, TestingSource, poll, post
from connectors.urls import MAX_URL_CHARS, UnusableUrl, clean_url
from core import kafka_writer
from core.config import Settings
from core.records import Deletion as PipelineDeletion, RawRecord, parse_post, post_payload


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    checkpoints = CheckpointStore(str(tmp_path / "checkpoints.sqlite"))
    yield checkpoints
    checkpoints.close()


def _parsed_by_pipeline(record: dict[str, Any]) -> Any:
    """What the pipeline makes of a record the connectors wrote: a post, a Deletion, or a DeadLetter."""
    return parse_post(RawRecord(post_payload(record), "kafka:raw/0/0"), 1 << 20, 20_000)


# 1. URLs never cost a post

def test_an_iri_permalink_is_percent_encoded_and_the_post_delivered(settings: Settings, store: CheckpointStore) -> None:
    iri = "https://www.reddit.com/r/de/comments/abc/kündigung_bei_xyz/"
    sink = ListSink()
    done = poll(TestingSource("t", [[post("test", "1", url=iri), post("test", "2", url="https://bücher.de/straße?q=ä")]]),
                sink, settings.kafka, store)
    assert (done.posts, done.dead_letters, done.urls_dropped) == (2, 0, 0)
    assert [p["url"] for p in sink.posts] == ["https://www.reddit.com/r/de/comments/abc/k%C3%BCndigung_bei_xyz/",
                                              "https://xn--bcher-kva.de/stra%C3%9Fe?q=%C3%A4"]
    for written in sink.posts:  # the pipeline validates the same schema again: it accepts them too
        assert isinstance(_parsed_by_pipeline(written), dict)


@pytest.mark.parametrize("url", ["https://example.org/a?b=c%20d#e", "http://example.org", "HTTPS://Example.org/X"])
def test_a_valid_url_is_left_as_it_is(url: str) -> None:
    assert clean_url(url) == url


def test_unusable_urls_are_dropped_counted_and_logged_and_their_posts_delivered(
        settings: Settings, store: CheckpointStore, caplog: pytest.LogCaptureFixture) -> None:
    unusable = ["javascript:alert(1)", "/r/de/comments/abc", "https://example.org/zwei wörter", "kein link",
                "https://example.org/" + "a" * MAX_URL_CHARS, "mailto:kunde@example.org", "https://", 42]
    pages = [[post("test", str(i), url=url) for i, url in enumerate(unusable)] + [post("test", "ok", url=None)]]
    sink = ListSink()
    with caplog.at_level(logging.INFO, logger="connectors.base"):
        done = poll(TestingSource("t", pages), sink, settings.kafka, store)
    assert (done.posts, done.dead_letters, done.urls_dropped) == (len(unusable) + 1, 0, len(unusable))
    assert all(p["url"] is None for p in sink.posts)
    warnings = [r for r in caplog.records if r.getMessage().startswith("unusable url dropped")]
    assert len(warnings) == len(unusable) and {r.fields["post_id"] for r in warnings} == {f"test:{i}" for i in range(8)}
    assert not any("kunde@example.org" in json.dumps(r.fields) for r in warnings)  # the URL itself is never logged
    [line] = [r for r in caplog.records if r.getMessage() == "delivered"]
    assert line.fields["urls_dropped"] == len(unusable) and line.fields["posts"] == len(unusable) + 1


def test_clean_url_says_why_without_repeating_the_url() -> None:
    with pytest.raises(UnusableUrl, match="not an absolute http") as caught:
        clean_url("ftp://files.example.org/geheim")
    assert "geheim" not in str(caught.value)


# 2. The listing walk's stop rule

class PinnedListing(ListingSource):
    """A newest-first listing of posts numbered by time, `size` a page, with an old `pinned` post always first."""

    kind = "test"

    def __init__(self, pinned: int, published: list[int], size: int = 3, max_pages: int = 50) -> None:
        super().__init__("pinned", every_s=0.0)
        self.pinned, self.published, self.size, self.max_pages = pinned, list(published), size, max_pages
        self.requests = 0

    def listing(self, cursor: Optional[str], mark: Optional[Mark]) -> Listing:
        self.requests += 1
        ordered = [self.pinned] + sorted((n for n in self.published if n != self.pinned), reverse=True)
        start = int(cursor or 0)
        page = ordered[start:start + self.size]
        more = start + self.size < len(ordered)
        return Listing([(n, post("test", str(n))) for n in page], str(start + self.size) if more else None)


def _round(source: ListingSource, sink: ListSink, settings: Settings, store: CheckpointStore) -> list[str]:
    sink.clear()
    source.requests = 0  # type: ignore[attr-defined]
    poll(source, sink, settings.kafka, store)
    return [p["id"].removeprefix("test:") for p in sink.posts]


def test_a_pinned_old_item_first_does_not_end_the_walk(settings: Settings, store: CheckpointStore) -> None:
    source = PinnedListing(pinned=2, published=list(range(1, 7)))
    sink = ListSink()
    assert _round(source, sink, settings, store) == ["2", "6", "5"]  # a new source reads its newest page
    source.published += range(7, 13)  # two pages and more of new posts, all behind the pinned one
    assert _round(source, sink, settings, store) == ["12", "11", "10", "9", "8", "7"]
    assert source.requests == 4  # pages 1-3 hold new posts; page 4 is all old and ends the round
    assert _round(source, sink, settings, store) == [] and source.requests == 1  # nothing new: one page, nothing twice


def test_items_that_shift_to_the_next_page_during_a_walk_are_delivered_once(settings: Settings,
                                                                             store: CheckpointStore) -> None:
    source = PinnedListing(pinned=2, published=list(range(1, 7)))
    sink = ListSink()
    _round(source, sink, settings, store)
    source.published += range(7, 13)
    poll(source, sink, settings.kafka, store, pages=1)  # the first page of a round: 2 (pinned, old), 12, 11
    source.published.append(13)  # published mid-walk: 11 moves down onto the page the walk reads next
    poll(source, sink, settings.kafka, store)
    poll(source, sink, settings.kafka, store)  # the next round finds 13
    delivered = [p["id"].removeprefix("test:") for p in sink.posts]
    assert sorted(delivered, key=int) == [str(n) for n in range(1, 14) if n not in (1, 3, 4)]  # each once
    assert len(delivered) == len(set(delivered))


def test_a_walk_stops_after_max_pages_however_far_behind_the_source_is(settings: Settings, store: CheckpointStore,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    source = PinnedListing(pinned=2, published=list(range(1, 7)), max_pages=4)
    sink = ListSink()
    _round(source, sink, settings, store)
    source.published += range(7, 200)
    with caplog.at_level(logging.WARNING, logger="connectors.listing"):
        delivered = _round(source, sink, settings, store)
    assert source.requests == 4 and len(delivered) == 4 * 3 - 1  # the pinned old one on page 1 is not new
    assert any("further behind" in r.getMessage() for r in caplog.records)


# 3. A malformed item without a position is dead-lettered once

def test_a_malformed_item_listed_every_round_is_dead_lettered_once(settings: Settings, tmp_path: Path) -> None:
    comment = Malformed("facebook:104200000000_904/comments#3", "item has no id or created_time", b'{"message":"x"}')
    invalid = {"id": "test:9", "source": "test"}  # no text: not a valid Post, listed again each round
    pages = [[post("test", "1"), comment, invalid], [comment, invalid, post("test", "2")], [comment]]
    sink = ListSink()
    path = str(tmp_path / "checkpoints.sqlite")
    first = CheckpointStore(path)
    done = poll(TestingSource("t", pages), sink, settings.kafka, first, pages=2)
    first.close()
    again = CheckpointStore(path)  # after a restart too
    later = poll(TestingSource("t", pages), sink, settings.kafka, again)
    again.close()
    assert [d.origin for d in sink.dead_letters] == [comment.position, "test:test:9"]
    assert (done.dead_letters, done.duplicates, later.dead_letters, later.duplicates) == (2, 2, 0, 1)
    assert [p["id"] for p in sink.posts] == ["test:1", "test:2"]


def test_a_malformed_item_that_changes_is_a_new_dead_letter(settings: Settings, store: CheckpointStore) -> None:
    pages = [[Malformed("t#1", "no time", b"v1")], [Malformed("t#1", "no time", b"v2")]]
    sink = ListSink()
    poll(TestingSource("t", pages), sink, settings.kafka, store)
    assert [d.payload for d in sink.dead_letters] == [b"v1", b"v2"]


# 4. Edits and deletions

def test_an_edit_is_delivered_again_and_an_unchanged_repeat_is_not(settings: Settings, store: CheckpointStore) -> None:
    original = post("test", "1", text="Kein Netz")
    edited = post("test", "1", text="Kein Netz seit gestern", edited_at="2026-11-05T10:00:00Z")
    again = post("test", "1", text="Kein Netz, seit gestern!", edited_at="2026-11-05T11:30:00Z")
    sink = ListSink()
    done = poll(TestingSource("t", [[original], [original], [edited], [edited, original], [again]]), sink,
                settings.kafka, store)
    assert [(p["id"], p["text"]) for p in sink.posts] == [
        ("test:1", "Kein Netz"), ("test:1", "Kein Netz seit gestern"), ("test:1", "Kein Netz, seit gestern!")]
    assert (done.posts, done.duplicates) == (3, 3)


def test_a_deletion_goes_to_the_raw_topic_once_keyed_by_the_post_id(settings: Settings, store: CheckpointStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Deletion("test:1", "test", "2026-11-05T12:00:00Z")
    sink = ListSink()
    done = poll(TestingSource("t", [[post("test", "1"), gone], [gone, Deletion("test:2", "test")]]), sink,
                settings.kafka, store)
    raw = sink.sent[settings.kafka.topics.raw]
    assert [(r["id"], r.get("kind")) for r in raw] == [("test:1", None), ("test:1", "deletion"), ("test:2", "deletion")]
    assert sink.deletions == [gone.record(), Deletion("test:2", "test").record()] and len(sink.posts) == 1
    assert (done.posts, done.deletions, done.duplicates) == (1, 2, 1)
    assert all(schemas.first_error(schemas.DELETION_SCHEMA, d) is None for d in sink.deletions)
    assert _parsed_by_pipeline(sink.deletions[0]) == PipelineDeletion("test:1", "test", "2026-11-05T12:00:00Z")

    sent: list[tuple[str, bytes, bytes]] = []

    class Producer:  # what KafkaWriter writes the same records as: keyed by the post id
        def send(self, topic: str, key: bytes, value: bytes) -> None:
            sent.append((topic, key, value))

        def flush(self, timeout: float) -> None: ...

    monkeypatch.setattr(kafka_writer, "producer", lambda cfg: Producer())
    monkeypatch.setattr(kafka_writer.KafkaWriter, "_wait", lambda self, futures: None)
    kafka_writer.KafkaWriter(settings.kafka).write_posts("raw", sink.deletions[:1])
    assert [(key, json.loads(value)) for _, key, value in sent] == [(b"test:1", gone.record())]


def test_an_invalid_deletion_is_a_dead_letter(settings: Settings, store: CheckpointStore) -> None:
    sink = ListSink()
    done = poll(TestingSource("t", [[Deletion("test:1", "test", "yesterday")]]), sink, settings.kafka, store)
    assert sink.deletions == [] and done.dead_letters == 1
    assert sink.dead_letters[0].reason.startswith("not a valid deletion: deleted_at: must satisfy format")


# 5. Brand accounts from the configuration

def _by(author: dict[str, Any], native_id: str) -> Post:
    return post("test", native_id, author=author)


def test_posts_by_configured_brand_accounts_are_marked_and_native_flags_kept(settings: Settings,
                                                                            store: CheckpointStore) -> None:
    source = TestingSource("t", [[
        _by({"id": "5005", "handle": "kunde_5"}, "by-id"),
        _by({"id": "77", "handle": "@TELCOHILFE"}, "by-handle"),
        _by({"id": "78", "handle": "TelcoHilfe", "role": "moderator"}, "own-role"),
        _by({"id": "79", "handle": "mitarbeiterin", "is_brand": True, "role": "staff"}, "native-flag"),
        _by({"id": "80", "handle": "kunde_8"}, "customer"),
        post("test", "no-author")]])
    source.brand_accounts = frozenset({"telcohilfe", "5005"})
    sink = ListSink()
    poll(source, sink, settings.kafka, store)
    authors = {p["id"].removeprefix("test:"): p.get("author") or {} for p in sink.posts}
    assert {k: (a.get("is_brand"), a.get("role")) for k, a in authors.items()} == {
        "by-id": (True, "brand"), "by-handle": (True, "brand"), "own-role": (True, "moderator"),
        "native-flag": (True, "staff"), "customer": (None, None), "no-author": (None, None)}
    assert authors["by-handle"]["handle"] == "@TELCOHILFE"  # marked, not rewritten


def test_every_polling_source_type_takes_brand_accounts_and_bad_entries_are_refused() -> None:
    polling = [c for c in get_args(get_args(connect_config.SourceConfig)[0])
               if c not in (connect_config.WebhookConfig, connect_config.ReplayConfig)]
    assert len(polling) >= 7 and all("brand_accounts" in c.model_fields for c in polling)
    for bad in (["zwei wörter"], ["@"], [""]):
        with pytest.raises(ValueError, match="brand_accounts"):
            connect_config.ConnectConfig.model_validate(
                {"sources": [{"type": "rss", "name": "blog", "url": "https://blog.example.org/feed", "brand_accounts": bad}]})


def test_polling_sources_carry_the_entrys_brand_accounts() -> None:
    cfg = connect_config.ConnectConfig.model_validate({"sources": [
        {"type": "discourse", "name": "forum", "url": "https://community.example.de",
         "brand_accounts": ["@TelcoHilfe", "Team_Anna"]}]}).sources[0]
    [source] = polling_sources(cfg, HttpClient("triage-tests"))
    assert source.brand_accounts == {"telcohilfe", "team_anna"}


def test_a_mastodon_brand_account_named_with_its_server_matches_its_local_handle() -> None:
    """README asks for `user@server`; on its own server Mastodon calls the account plain `user`."""
    cfg = connect_config.ConnectConfig.model_validate({"sources": [
        {"type": "mastodon", "name": "masto", "url": "https://social.example", "hashtags": ["telco"],
         "brand_accounts": ["@Telco_Hilft@social.example"]}]}).sources[0]
    brands = polling_sources(cfg, HttpClient("triage-tests"))[0].brand_accounts
    assert {"telco_hilft", "telco_hilft@social.example"} <= brands and "someone_else@social.example" not in brands


def test_connect_marks_the_brand_accounts_named_in_sources_yaml(settings: Settings, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_apis import FakeApis
    from test_source_apis import SECRETS, entries
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    apis = FakeApis()
    try:
        path = tmp_path / "sources.yaml"
        path.write_text(yaml.safe_dump({"checkpoint_db": str(tmp_path / "cp.sqlite"),
                                        "sources": [{**entries(apis.url)["x"], "brand_accounts": ["@KUNDE_2"]}]}))
        sink = ListSink()
        run(settings, str(path), once=True, stop=threading.Event(), sink=sink)
    finally:
        apis.close()
    marked = {p["author"]["handle"]: bool(p["author"].get("is_brand")) for p in sink.posts}
    assert marked.get("kunde_2") is True and marked and not all(marked.values())


def test_run_polling_applies_the_sources_brand_accounts(settings: Settings, store: CheckpointStore) -> None:
    source = TestingSource("t", [[_by({"id": "1", "handle": "TelcoHilfe"}, "1")]])
    source.brand_accounts = frozenset({"telcohilfe"})
    sink = ListSink()
    run_polling(source, store, sink, settings.kafka, threading.Event(), once=True)
    assert sink.posts[0]["author"]["is_brand"] is True
