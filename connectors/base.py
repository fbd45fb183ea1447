"""What every connector shares: a source fills in `fetch`, the runner does the rest.

A source turns its API's pages into Posts (or Malformed items, with the position in the source)
and says where it stands now (`Page.state`: cursor, since-id, ETag). The runner validates posts
against the Post schema, drops ids already delivered, produces to the raw topic (acks=all,
idempotent, keyed by post id), sends malformed items to the dead-letter topic, and only then saves
the new state and the delivered ids: that order is what makes a crash lose nothing.

Where posts and dead letters go is a `PostSink`: `KafkaWriter` (core/kafka_writer.py) in production,
`connectors.testing.ListSink` in tests, which keeps them in lists and can be told to fail writes.
"""
from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, Union

import schemas
from connectors.checkpoint import CheckpointStore
from core.config import KafkaSettings
from core.records import DeadLetter, RawRecord, dead_letter
from core.redact import redact_text

log = logging.getLogger(__name__)
Post = dict[str, Any]


class PostSink(Protocol):
    """What the runner writes to. Each write returns once every record is stored, or raises: a raise keeps the
    checkpoint where it was, so the same page is fetched and written again on the next round."""

    def write_posts(self, topic: str, posts: Sequence[Post]) -> None: ...

    def write_dead_letters(self, topic: str, letters: Sequence[DeadLetter]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Malformed:
    """An item the source delivered that cannot become a Post; kept as a dead letter with its position."""
    position: str  # e.g. "rss:https://example.org/feed.xml#item-3"
    reason: str
    raw: bytes


@dataclass(frozen=True)
class Deletion:
    """The source says a post it delivered earlier was deleted or removed. It travels on the raw topic as a
    deletion record (schemas/deletion.v1.schema.json) so the pipeline can mark the post in the index."""
    post_id: str  # the Post id it was delivered under, '<source>:<native id>'
    source: str
    deleted_at: Optional[str] = None  # RFC 3339, when the source says

    def record(self) -> dict[str, Any]:
        return {"schema_version": 1, "kind": "deletion", "id": self.post_id, "source": self.source,
                "deleted_at": self.deleted_at}


@dataclass
class Page:
    items: list[Union[Post, Malformed, Deletion]]
    state: dict[str, Any]
    more: bool = False  # another page is ready now (pagination, an open stream); fetch again without waiting
    skipped: int = 0  # items the source listed but that are not posts to triage (deleted, reshares, no text)


@dataclass
class Delivery:
    posts: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    skipped: int = 0
    ids: list[str] = field(default_factory=list)


class Source(ABC):
    """A polling source. Subclasses set `kind` (the Post's `source`) and implement `fetch`."""

    kind = "source"

    def __init__(self, name: str, every_s: float) -> None:
        self.name, self.every_s = name, every_s

    @abstractmethod
    def fetch(self, state: dict[str, Any]) -> Page:
        """The next page after `state` (an empty dict the first time)."""

    def post_id(self, native_id: str) -> str:
        return f"{self.kind}:{native_id}"


def _check(item: Union[Post, Malformed]) -> Union[Post, Malformed]:
    if isinstance(item, Malformed):
        return item
    error = schemas.first_error(schemas.POST_SCHEMA, item)
    if error:
        return Malformed(f"{item.get('source')}:{item.get('id')}", f"not a valid Post: {error}",
                         json.dumps(item, ensure_ascii=False, default=str).encode())
    return item


def deliver(name: str, page: Page, store: CheckpointStore, writer: PostSink, kafka: KafkaSettings) -> Delivery:
    """Write a page's posts and dead letters, then commit its state. Raises if the sink (Kafka) does not acknowledge."""
    checked = [_check(item) for item in page.items]
    posts = {p["id"]: p for p in checked if not isinstance(p, Malformed)}  # a page may repeat an id
    fresh = store.unseen(name, posts)
    result = Delivery(duplicates=len(posts) - len(fresh), skipped=page.skipped)
    new_posts = [p for i, p in posts.items() if i in fresh]
    letters: list[DeadLetter] = []
    for bad in (i for i in checked if isinstance(i, Malformed)):
        log.warning("malformed item skipped", extra={"fields": {"source": name, "position": bad.position,
                                                                "reason": bad.reason}})
        letters.append(dead_letter("malformed_source_item", bad.reason, RawRecord(bad.raw, bad.position)))
    if new_posts:
        writer.write_posts(kafka.topics.raw, new_posts)
    if letters:
        writer.write_dead_letters(kafka.topics.dead_letter, letters)
    store.commit(name, page.state, fresh)
    result.posts, result.dead_letters, result.ids = len(new_posts), len(letters), sorted(fresh)
    return result


def run_polling(source: Source, store: CheckpointStore, writer: PostSink, kafka: KafkaSettings,
                stop: threading.Event, once: bool = False, pages: Optional[int] = None) -> Delivery:
    """Poll until `stop` is set (or one full pass with `once`, or `pages` pages delivered); a failing poll is
    logged and retried later (with `once`, raised)."""
    total = Delivery()
    delivered = 0
    while not stop.is_set() and (pages is None or delivered < pages):
        try:
            page = source.fetch(store.state(source.name))
            done = deliver(source.name, page, store, writer, kafka)
        except Exception as exc:  # the source or Kafka is down: keep the old state, try again next round
            log.error("poll failed, will retry", extra={"fields": {"source": source.name, "error": redact_text(f"{type(exc).__name__}: {exc}")}})
            if once:
                raise
            stop.wait(source.every_s)
            continue
        delivered += 1
        total.posts += done.posts
        total.duplicates += done.duplicates
        total.dead_letters += done.dead_letters
        total.skipped += done.skipped
        total.ids += done.ids
        if done.posts or done.dead_letters or done.skipped:
            log.info("delivered", extra={"fields": {"source": source.name, "posts": done.posts,
                                                    "dead_letters": done.dead_letters, "duplicates": done.duplicates,
                                                    "skipped": done.skipped}})
        if page.more or (pages is not None and delivered >= pages):
            continue
        if once:
            break
        stop.wait(source.every_s)
    return total
