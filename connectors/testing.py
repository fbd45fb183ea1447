"""Testing kit for connectors, in the spirit of bytewax.testing: run the real runner without Kafka.

`ListSink` stands in for the KafkaWriter: it keeps what would have been sent, per topic, and can be
told to fail its next writes (a broker that does not acknowledge), so retries are tested through
the runner's own code. `TestingSource` serves pages given in advance. `poll` runs one source through
`connectors.base.run_polling` once (the `once=True` path `triage connect --once` takes).

    sink = ListSink()
    store = CheckpointStore(str(tmp_path / "checkpoints.sqlite"))
    run_polling(source, store, sink, settings.kafka, threading.Event(), once=True)
    assert [p["id"] for p in sink.posts] == [...]
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from connectors.base import Deletion, Delivery, Malformed, Page, Post, Source, run_polling
from connectors.checkpoint import CheckpointStore
from core.config import KafkaSettings
from core.records import DeadLetter, post_payload


class SinkUnavailable(ConnectionError):
    """What a ListSink raises for a write it was told to fail."""


@dataclass
class ListSink:
    """A PostSink that keeps everything in memory. `fail_next(n)` makes the next n writes raise, writing nothing.

    Posts are encoded as KafkaWriter encodes them (core.records.post_payload), so a post Kafka could not
    carry fails here too."""

    sent: dict[str, list[Any]] = field(default_factory=dict)  # topic -> posts or dead letters, in order
    batches: list[tuple[str, list[Any]]] = field(default_factory=list)  # (topic, items) of each successful write
    writes: int = 0  # write calls, failed ones included
    failures: int = 0  # write calls that raised
    closed: bool = False
    _fail: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(self, writes: int = 1) -> None:
        with self._lock:
            self._fail += writes

    def _write(self, topic: str, items: Sequence[Any]) -> None:
        with self._lock:
            if self.closed:
                raise SinkUnavailable("write after close")
            self.writes += 1
            if self._fail:
                self._fail -= 1
                self.failures += 1
                raise SinkUnavailable(f"scripted failure writing {len(items)} record(s) to {topic}")
            self.sent.setdefault(topic, []).extend(items)
            self.batches.append((topic, list(items)))

    def write_posts(self, topic: str, posts: Sequence[Post]) -> None:
        for post in posts:
            post_payload(post)  # what KafkaWriter sends: a post it could not encode fails here too
        self._write(topic, [dict(post) for post in posts])

    def write_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None:
        self._write(topic, list(letters))

    def close(self) -> None:
        self.closed = True

    @property
    def posts(self) -> list[Post]:
        """Every post written, whatever the topic (deletion records, written beside them, are in `deletions`)."""
        return [item for item in self._records() if item.get("kind") != "deletion"]

    @property
    def deletions(self) -> list[dict[str, Any]]:
        """Every deletion record written (schemas/deletion.v1.schema.json), whatever the topic."""
        return [item for item in self._records() if item.get("kind") == "deletion"]

    def _records(self) -> list[dict[str, Any]]:
        return [item for items in self.sent.values() for item in items if isinstance(item, dict)]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [item for items in self.sent.values() for item in items if isinstance(item, DeadLetter)]

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()
            self.batches.clear()


class TestingSource(Source):
    """A polling source serving `pages` (lists of Posts, Malformed items or Deletions) one per fetch, then empty pages.

    Its state is the index of the next page, so a checkpoint store resumes it like a real source;
    `more` is true while pages are left. An Exception in a page's place is raised by that fetch, once.
    """

    __test__ = False  # not a pytest test class
    kind = "test"

    def __init__(self, name: str, pages: Sequence[Union[Sequence[Union[Post, Malformed, Deletion]], Exception]],
                 every_s: float = 0.0) -> None:
        super().__init__(name, every_s)
        self.pages = list(pages)
        self.fetches = 0

    def fetch(self, state: dict[str, Any]) -> Page:
        self.fetches += 1
        index = int(state.get("page", 0))
        if index >= len(self.pages):
            return Page([], {"page": index})
        page = self.pages[index]
        if isinstance(page, Exception):
            del self.pages[index]  # fails once; the next fetch from the same state gets the page after it
            raise page
        return Page(list(page), {"page": index + 1}, more=index + 1 < len(self.pages))


def post(source: str, native_id: str, text: str = "Seit drei Tagen kein Netz", **fields: Any) -> Post:
    """A valid Post with the fewest fields the schema asks for."""
    return {"id": f"{source}:{native_id}", "source": source, "text": text, "created_at": "2026-11-05T09:00:00Z",
            **fields}


def poll(source: Source, sink: ListSink, kafka: KafkaSettings, store: CheckpointStore,
         pages: Optional[int] = None) -> Delivery:
    """One pass of `source` through the real runner (`run_polling(once=True)`), at most `pages` pages."""
    return run_polling(source, store, sink, kafka, threading.Event(), once=True, pages=pages)
