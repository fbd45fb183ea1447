"""The connector runner (connectors/base.py, connectors/run.py) with a ListSink in place of Kafka: fast, no broker."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from connectors.base import Malformed, run_polling
from connectors.checkpoint import CheckpointStore
from connectors.run import run
from connectors.testing import ListSink, SinkUnavailable, TestingSource, poll, post
from core.config import Settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CheckpointStore]:
    checkpoints = CheckpointStore(str(tmp_path / "checkpoints.sqlite"))
    yield checkpoints
    checkpoints.close()


def test_posts_go_to_the_raw_topic_and_malformed_items_to_dead_letters(settings: Settings,
                                                                       store: CheckpointStore) -> None:
    source = TestingSource("t", [[post("test", "1"), post("test", "2")],
                                 [post("test", "2"), Malformed("t#3", "item has no id", b"{}"),
                                  {"id": "test:4", "source": "test"}]])  # no text: not a valid Post
    sink = ListSink()
    done = poll(source, sink, settings.kafka, store)
    topics = settings.kafka.topics
    assert [p["id"] for p in sink.sent[topics.raw]] == ["test:1", "test:2"]  # test:2 again on page 2: dropped
    letters = sink.sent[topics.dead_letter]
    assert [(d.reason_code, d.origin) for d in letters] == [("malformed_source_item", "t#3"),
                                                             ("malformed_source_item", "test:test:4")]
    assert letters[1].reason.startswith("not a valid Post")
    assert (done.posts, done.duplicates, done.dead_letters) == (2, 1, 2)
    assert store.state("t") == {"page": 2}


def test_a_second_pass_resumes_from_the_checkpoint_and_delivers_nothing_twice(settings: Settings,
                                                                               store: CheckpointStore) -> None:
    pages = [[post("test", "1")], [post("test", "2")]]
    sink = ListSink()
    poll(TestingSource("t", pages), sink, settings.kafka, store, pages=1)
    assert [p["id"] for p in sink.posts] == ["test:1"]
    poll(TestingSource("t", pages + [[post("test", "1"), post("test", "3")]]), sink, settings.kafka, store)
    assert [p["id"] for p in sink.posts] == ["test:1", "test:2", "test:3"]


def test_a_failed_write_keeps_the_checkpoint_and_the_next_round_writes_the_page_once(settings: Settings,
                                                                                     store: CheckpointStore) -> None:
    source = TestingSource("t", [[post("test", "1"), Malformed("t#2", "broken", b"x")]])
    sink = ListSink()
    sink.fail_next(1)
    with pytest.raises(SinkUnavailable):  # with once, the failure is the caller's
        poll(source, sink, settings.kafka, store)
    assert sink.sent == {} and store.state("t") == {}
    sink.fail_next(2)
    done = run_polling(source, store, sink, settings.kafka, threading.Event(), pages=1)  # retried after every_s=0
    assert sink.failures == 3 and done.posts == 1
    assert [p["id"] for p in sink.posts] == ["test:1"]
    assert [d.origin for d in sink.dead_letters] == ["t#2"]
    assert store.state("t") == {"page": 1}


def test_a_failing_source_is_retried_by_the_runner(settings: Settings, store: CheckpointStore) -> None:
    source = TestingSource("t", [ConnectionError("feed down"), [post("test", "1")]])
    sink = ListSink()
    done = run_polling(source, store, sink, settings.kafka, threading.Event(), pages=1)
    assert source.fetches == 2 and [p["id"] for p in sink.posts] == ["test:1"] and done.posts == 1


def test_connect_runs_configured_sources_into_the_given_sink(settings: Settings, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_apis import FakeApis
    from test_source_apis import SECRETS, entries
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    apis = FakeApis()
    try:
        chosen = entries(apis.url)
        path = tmp_path / "sources.yaml"
        path.write_text(yaml.safe_dump({"checkpoint_db": str(tmp_path / "cp.sqlite"),
                                        "sources": [chosen["discourse"], chosen["x"]]}))
        sink = ListSink()
        counts = run(settings, str(path), once=True, stop=threading.Event(), sink=sink)
    finally:
        apis.close()
    assert counts == {"forum": 3, "x": 3}
    assert sorted(p["source"] for p in sink.sent[settings.kafka.topics.raw]) == ["discourse"] * 3 + ["twitter"] * 3
    assert not sink.closed  # a sink passed in is the caller's to close
