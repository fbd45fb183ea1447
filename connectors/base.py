"""What every connector shares: a source fills in `fetch`, the runner does the rest.

A source turns its API's pages into Posts (or Malformed items, with the position in the source, or
Deletions) and says where it stands now (`Page.state`: cursor, since-id, ETag). The runner applies the
rules every source shares, validates posts against the Post schema and deletions against the Deletion
schema, drops what was already delivered, produces posts and deletion records to the raw topic
(acks=all, idempotent, keyed by post id), sends malformed items to the dead-letter topic, and only then
saves the new state and the delivered keys: that order is what makes a crash lose nothing.

The shared rules: a URL never costs a post (an IRI is percent-encoded, an unusable URL is dropped and
counted, connectors/urls.py); a post by one of the source's `brand_accounts` (sources.yaml) is marked
`author.is_brand`; an edited post (`edited_at`) is a new version and is delivered again; a malformed item
a source lists every round is dead-lettered once (see `dedup_key`).

Where posts and dead letters go is a `PostSink`: `KafkaWriter` (core/kafka_writer.py) in production,
`connectors.testing.ListSink` in tests, which keeps them in lists and can be told to fail writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import AbstractSet, Any, Optional, Protocol, Sequence, Union

import schemas
from connectors.checkpoint import CheckpointStore
from connectors.urls import UnusableUrl, clean_url
from core.config import KafkaSettings
from core.records import DeadLetter, RawRecord, dead_letter
from core.redact import redact_text

log = logging.getLogger(__name__)
Post = dict[str, Any]


class PostSink(Protocol):
    """What the runner writes to. Each write returns once every record is stored, or raises: a raise keeps the
    checkpoint where it was, so the same page is fetched and written again on the next round."""

    def write_posts(self, topic: str, posts: Sequence[Post]) -> None:
        """Records keyed by their `id`: posts, and deletion records (`Deletion.record()`) for the same topic."""

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
    duplicates: int = 0  # posts, deletions and malformed items delivered before
    dead_letters: int = 0
    skipped: int = 0
    deletions: int = 0
    urls_dropped: int = 0  # unusable URLs set to null; their posts were delivered
    ids: list[str] = field(default_factory=list)  # the delivered posts' ids

    def add(self, other: "Delivery") -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Source(ABC):
    """A polling source. Subclasses set `kind` (the Post's `source`) and implement `fetch`."""

    kind = "source"
    # author ids or handles (brand_key form) whose posts speak for the brand; set from sources.yaml by connectors/run.py
    brand_accounts: AbstractSet[str] = frozenset()

    def __init__(self, name: str, every_s: float) -> None:
        self.name, self.every_s = name, every_s

    @abstractmethod
    def fetch(self, state: dict[str, Any]) -> Page:
        """The next page after `state` (an empty dict the first time)."""

    def post_id(self, native_id: str) -> str:
        return f"{self.kind}:{native_id}"


def brand_key(account: str) -> str:
    """How brand accounts are compared: `@` optional, case-insensitive (`@TelcoHilfe` is `telcohilfe`)."""
    return account.strip().lstrip("@").casefold()


def dedup_key(item: Union[Post, Malformed, Deletion]) -> str:
    """What the delivered table remembers an item by. An edit is a new version (`id@edited_at`), delivered again
    and replacing the old one in the index; a malformed item has no id, so its position and raw bytes name it."""
    if isinstance(item, Deletion):
        return f"deleted:{item.post_id}"
    if isinstance(item, Malformed):
        return "malformed:" + hashlib.sha256(item.position.encode() + b"\0" + item.raw).hexdigest()
    return f"{item['id']}@{item['edited_at']}" if item.get("edited_at") else str(item["id"])


def post_with_clean_url(name: str, post: Post) -> tuple[Post, bool]:
    """The post with its URL as a valid URI, or with none when it is unusable (True): a link never costs a post."""
    if post.get("url") is None:
        return post, False
    try:
        url = clean_url(post["url"])
    except UnusableUrl as exc:
        log.warning("unusable url dropped, the post is delivered without it",
                    extra={"fields": {"source": name, "post_id": post.get("id"), "reason": f"url {exc}"}})
        return {**post, "url": None}, True
    return ({**post, "url": url} if url != post["url"] else post), False


def _mark_brand(post: Post, brands: AbstractSet[str]) -> Post:
    """A post by a configured brand account is the brand's; a flag or role the source set itself is kept."""
    author = post.get("author")
    if not brands or not isinstance(author, dict) or not any(
            isinstance(author.get(key), str) and brand_key(author[key]) in brands for key in ("id", "handle")):
        return post
    return {**post, "author": {**author, "is_brand": True, "role": author.get("role") or "brand"}}


def _check(item: Union[Post, Malformed, Deletion]) -> Union[Post, Malformed, Deletion]:
    if isinstance(item, Malformed):
        return item
    if isinstance(item, Deletion):
        record = item.record()
        error = schemas.first_error(schemas.DELETION_SCHEMA, record)
        return Malformed(f"deletion:{item.post_id}", f"not a valid deletion: {error}",
                         json.dumps(record, ensure_ascii=False).encode()) if error else item
    error = schemas.first_error(schemas.POST_SCHEMA, item)
    if error:
        return Malformed(f"{item.get('source')}:{item.get('id')}", f"not a valid Post: {error}",
                         json.dumps(item, ensure_ascii=False, default=str).encode())
    return item


def deliver(name: str, page: Page, store: CheckpointStore, writer: PostSink, kafka: KafkaSettings,
            brands: AbstractSet[str] = frozenset()) -> Delivery:
    """Write a page's posts, deletions and dead letters, then commit its state. Raises if the sink (Kafka) does not
    acknowledge. `brands`: the source's brand accounts (`brand_key` form)."""
    result = Delivery(skipped=page.skipped)
    prepared: list[Union[Post, Malformed, Deletion]] = []
    for item in page.items:
        if isinstance(item, dict):
            item, dropped = post_with_clean_url(name, _mark_brand(item, brands))
            result.urls_dropped += dropped
        prepared.append(_check(item))
    keyed = {dedup_key(item): item for item in prepared}  # a page may repeat an item
    fresh = store.unseen(name, keyed)
    new = [item for key, item in keyed.items() if key in fresh]
    records = [item.record() if isinstance(item, Deletion) else item for item in new if not isinstance(item, Malformed)]
    letters: list[DeadLetter] = []
    for bad in (item for item in new if isinstance(item, Malformed)):
        log.warning("malformed item skipped", extra={"fields": {"source": name, "position": bad.position,
                                                                "reason": bad.reason}})
        letters.append(dead_letter("malformed_source_item", bad.reason, RawRecord(bad.raw, bad.position)))
    if records:
        writer.write_posts(kafka.topics.raw, records)  # in page order: a post and its deletion stay in order
    if letters:
        writer.write_dead_letters(kafka.topics.dead_letter, letters)
    store.commit(name, page.state, fresh)
    posts = [item for item in new if isinstance(item, dict)]
    result.duplicates, result.posts, result.dead_letters = len(keyed) - len(fresh), len(posts), len(letters)
    result.deletions, result.ids = len(records) - len(posts), sorted(p["id"] for p in posts)
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
            done = deliver(source.name, page, store, writer, kafka, source.brand_accounts)
        except Exception as exc:  # the source or Kafka is down: keep the old state, try again next round
            log.error("poll failed, will retry", extra={"fields": {"source": source.name, "error": redact_text(f"{type(exc).__name__}: {exc}")}})
            if once:
                raise
            stop.wait(source.every_s)
            continue
        delivered += 1
        total.add(done)
        if done.posts or done.dead_letters or done.skipped or done.deletions or done.urls_dropped:
            log.info("delivered", extra={"fields": {"source": source.name, "posts": done.posts,
                                                    "deletions": done.deletions, "dead_letters": done.dead_letters,
                                                    "duplicates": done.duplicates, "skipped": done.skipped,
                                                    "urls_dropped": done.urls_dropped}})
        if page.more or (pages is not None and delivered >= pages):
            continue
        if once:
            break
        stop.wait(source.every_s)
    return total
