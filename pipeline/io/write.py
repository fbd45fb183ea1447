"""The two write transforms of batch and stream alike: WriteToElasticsearch and WriteToKafka.

Both buffer the elements of a bundle and write them every `flush_every` elements and at the end of
the bundle (finish_bundle), not through BatchElements: in the streaming job the source, enrichment
and these writes run as one fused bundle, and the source's bundle finalizer commits the offsets only
after every write of the bundle was acknowledged. A write that fails fails the bundle (nothing is
committed; the records come again).

Waiting for Elasticsearch is pluggable: `wait(delay_s)` is called between retries. Batch sleeps
(time.sleep). The streaming job passes pipeline.io.kafka_stream.keep_membership, which pauses the
consumer's partitions and keeps polling for the delay, so a long outage holds the bundle back without
the worker missing max.poll.interval.ms and leaving its consumer group (backpressure).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Literal, Optional, TypeVar

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from core.clients import elasticsearch_client
from core.config import ElasticsearchSettings, KafkaSettings
from core.kafka_writer import KafkaWriter
from core.records import DeadLetter, Deletion, RawRecord, dead_letter, post_payload
from core.redact import redact_text
from core.retry import backoff_delays
from pipeline import observability
from pipeline.io.elasticsearch import ElasticsearchBulkWriter, IndexUnavailable, Item, Rejection

log = logging.getLogger(__name__)
REJECTED_TAG = "rejected"
WRITTEN_TAG = "written"
_OUTAGE_BACKOFF_S, _OUTAGE_BACKOFF_CAP_S = 1.0, 10.0
T = TypeVar("T")


def _sleep(delay_s: float) -> None:
    time.sleep(delay_s)


class BundleBuffer:
    """A bundle's elements with their timestamps and windows, so the ones written in finish_bundle keep them."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any, Any]] = []

    def add(self, element: Any, timestamp: Any, window: Any) -> None:
        self.items.append((element, timestamp, window))

    def take(self) -> list[tuple[Any, Any, Any]]:
        items, self.items = self.items, []
        return items

    def __len__(self) -> int:
        return len(self.items)


def _as_record(item: Item) -> RawRecord:
    """What a rejected post or deletion is kept as in its dead letter: its record, replayable as it is."""
    if isinstance(item, Deletion):
        return RawRecord(item.payload(), f"deletion:{item.post_id}")
    return RawRecord(post_payload(item), f"post:{item['id']}")


class _IndexPosts(beam.DoFn):
    """Bulk-indexes posts and deletions per bundle; outputs the acknowledged ones and, tagged, the rejected ones."""

    def __init__(self, cfg: ElasticsearchSettings, index: Optional[str], flush_every: int,
                 wait: Callable[[float], None], max_outage_s: float) -> None:
        self.cfg, self.index, self.flush_every = cfg, index, flush_every
        self.wait, self.max_outage_s = wait, max_outage_s

    def setup(self) -> None:
        self._es = elasticsearch_client(self.cfg)
        self._writer = ElasticsearchBulkWriter(self._es, self.cfg, self.index, wait=self.wait)

    def start_bundle(self) -> None:
        self._buffer = BundleBuffer()

    def process(self, item: Item, timestamp: Any = beam.DoFn.TimestampParam,
                window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
        self._buffer.add(item, timestamp, window)
        if len(self._buffer) >= self.flush_every:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        items = self._buffer.take()
        if not items:
            return
        batch = [item for item, _, _ in items]
        rejected = self._write_patiently(batch)
        acked_ms = time.time() * 1000
        observability.BATCH_SIZE.observe(len(batch))
        reasons = {id(r.post): r.reason for r in rejected}  # by identity: one id can come twice in a batch
        observability.POSTS_INDEXED.inc(sum(1 for item in batch if isinstance(item, dict) and id(item) not in reasons))
        for item, timestamp, window in items:
            if id(item) in reasons:
                letter = dead_letter("index_rejected", reasons[id(item)], _as_record(item))
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, WindowedValue(letter, timestamp, (window,)))
                continue
            if isinstance(item, dict) and item.get("_produced_ms"):
                observability.END_TO_END_SECONDS.observe(max(0.0, acked_ms - item["_produced_ms"]) / 1000)
            yield WindowedValue(item, timestamp, (window,))

    def _write_patiently(self, posts: list[Item]) -> list[Rejection]:
        return write_patiently(lambda: self._writer.write(posts), len(posts), self.wait, self.max_outage_s)

    def teardown(self) -> None:
        self._es.close()


def write_patiently(write: Callable[[], T], size: int, wait: Callable[[float], None], max_outage_s: float) -> T:
    """`write()` (which makes its own bounded retries), then, while it raises IndexUnavailable, more rounds
    through `wait` until max_outage_s has passed; then IndexUnavailable fails the bundle. Shared by the posts'
    writes and every other write of a bundle to Elasticsearch (the cases, triage/case_writer.py)."""
    started = time.monotonic()
    delays = backoff_delays(1_000_000, _OUTAGE_BACKOFF_S, cap_s=_OUTAGE_BACKOFF_CAP_S)
    while True:
        try:
            return write()
        except IndexUnavailable as exc:
            waited = time.monotonic() - started
            if waited >= max_outage_s:
                raise
            observability.INDEX_RETRIES.inc()
            log.warning("elasticsearch unavailable, holding the batch",
                        extra={"fields": {"posts": size, "waited_s": round(waited),
                                          "error": redact_text(str(exc))[:200]}})
            wait(min(next(delays), max_outage_s - waited))


class WriteToElasticsearch(beam.PTransform):
    """Enriched posts and deletions -> Elasticsearch (their two documents each, see pipeline/io/elasticsearch.py).

    Returns a DoOutputsTuple: the main output (also `written`) holds the posts and deletions Elasticsearch
    acknowledged, `rejected` the dead letters (reason code index_rejected, the writer's reason) of the
    ones it refused. `wait` is called between retries; after the writer's own retries run out the
    write keeps trying, through `wait`, until `max_outage_s` has passed (0: give up at once).
    """

    def __init__(self, es_settings: ElasticsearchSettings, index: Optional[str] = None,
                 flush_every: Optional[int] = None, wait: Optional[Callable[[float], None]] = None,
                 max_outage_s: float = 0.0) -> None:
        super().__init__()
        self.es_settings, self.index = es_settings, index
        self.flush_every = flush_every or es_settings.bulk_size
        self.wait, self.max_outage_s = wait or _sleep, max_outage_s

    def expand(self, posts: beam.PCollection) -> Any:
        return posts | "Index" >> beam.ParDo(
            _IndexPosts(self.es_settings, self.index, self.flush_every, self.wait, self.max_outage_s)
        ).with_outputs(REJECTED_TAG, main=WRITTEN_TAG)


class _Produce(beam.DoFn):
    """Writes a bundle's posts or dead letters to a topic, every flush_every and at the end of the bundle."""

    def __init__(self, cfg: KafkaSettings, topic: str, kind: str, flush_every: int) -> None:
        self.cfg, self.topic, self.kind, self.flush_every = cfg, topic, kind, flush_every

    def setup(self) -> None:
        self._writer = KafkaWriter(self.cfg)

    def start_bundle(self) -> None:
        self._buffer: list[Any] = []

    def process(self, element: Any) -> None:
        self._buffer.append(element)
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        if self.kind == "posts":
            self._writer.write_posts(self.topic, batch)
            observability.POSTS_PUBLISHED.inc(len(batch))
        else:
            letters: list[DeadLetter] = batch
            self._writer.write_dead_letters(self.topic, letters)
            for letter in letters:
                observability.DEAD_LETTERS.labels(letter.reason_code).inc()

    def teardown(self) -> None:
        self._writer.close()


class WriteToKafka(beam.PTransform):
    """Posts (kind="posts": keyed by id) or dead letters (kind="dead_letters": reason in the headers) -> a topic.

    Acknowledged writes (acks=all, idempotent producer, core/kafka_writer.py); a write the broker does
    not acknowledge within the delivery timeout fails the bundle. Outputs nothing.
    """

    def __init__(self, kafka_settings: KafkaSettings, topic: str,
                 kind: Literal["posts", "dead_letters"] = "posts", flush_every: int = 500) -> None:
        super().__init__()
        if kind not in ("posts", "dead_letters"):
            raise ValueError(f"WriteToKafka writes 'posts' or 'dead_letters', not {kind!r}")
        self.kafka_settings, self.topic, self.kind, self.flush_every = kafka_settings, topic, kind, flush_every

    def expand(self, elements: beam.PCollection) -> Any:
        return elements | "Produce" >> beam.ParDo(_Produce(self.kafka_settings, self.topic, self.kind,
                                                            self.flush_every))
