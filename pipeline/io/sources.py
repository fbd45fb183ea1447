"""Bounded sources for `triage batch`: JSONL files, a Kafka topic over an offset or time range, an index.

Each yields RawRecords (bytes plus origin), so parsing and dead letters are handled once downstream.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.metrics import Metrics
from elasticsearch.helpers import scan
from kafka import KafkaConsumer, TopicPartition

from core.clients import elasticsearch_client, kafka_options
from core.config import ElasticsearchSettings, KafkaSettings
from pipeline.enrich import SUMMARY_NAMESPACE
from core.records import POST_FIELDS, RawRecord, post_payload



class ReadJsonlFiles(beam.PTransform):
    """One RawRecord per non-blank line of the files matching the glob patterns (bytes kept as they are)."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = patterns

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        reads = [pbegin | f"ReadLines[{i}]" >> beam.io.ReadFromTextWithFilename(pattern, coder=BytesCoder())
                 for i, pattern in enumerate(self.patterns)]
        return (reads | "MergeFiles" >> beam.Flatten()
                | "SkipBlankLines" >> beam.Filter(lambda item: item[1].strip() != b"")
                | "ToRawRecords" >> beam.MapTuple(lambda name, line: RawRecord(line, f"file:{name}")))


def _offset_bound(consumer: KafkaConsumer, tp: TopicPartition, bound: Optional[str], default: int) -> int:
    """An offset from 'earliest', 'latest', an integer offset, an ISO timestamp, or the default."""
    if bound is None:
        return default
    if bound == "earliest":
        return consumer.beginning_offsets([tp])[tp]
    if bound == "latest":
        return consumer.end_offsets([tp])[tp]
    if bound.isdigit():
        return int(bound)
    millis = int(datetime.fromisoformat(bound.replace("Z", "+00:00")).timestamp() * 1000)
    found = consumer.offsets_for_times({tp: millis})[tp]
    return found.offset if found else consumer.end_offsets([tp])[tp]


class ReadPartitionRange(beam.DoFn):
    """Reads [start, end) of one partition, where end is fixed when the read starts (a bounded read)."""

    def __init__(self, cfg: KafkaSettings, topic: str, start: Optional[str], end: Optional[str]) -> None:
        self.cfg, self.topic, self.start, self.end = cfg, topic, start, end

    def process(self, partition: int) -> Iterator[RawRecord]:
        consumer = KafkaConsumer(**kafka_options(self.cfg), enable_auto_commit=False, group_id=None)
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            first = _offset_bound(consumer, tp, self.start, consumer.beginning_offsets([tp])[tp])
            last = _offset_bound(consumer, tp, self.end, consumer.end_offsets([tp])[tp])
            if first >= last:
                return
            consumer.seek(tp, first)
            while consumer.position(tp) < last:
                for message in consumer.poll(timeout_ms=1000).get(tp, []):
                    if message.offset >= last:
                        return
                    yield RawRecord(message.value or b"", f"kafka:{self.topic}/{partition}/{message.offset}")
        finally:
            consumer.close()


class ReadKafkaRange(beam.PTransform):
    def __init__(self, cfg: KafkaSettings, topic: str, start: Optional[str], end: Optional[str]) -> None:
        super().__init__()
        self.cfg, self.topic, self.start, self.end = cfg, topic, start, end

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        consumer = KafkaConsumer(**kafka_options(self.cfg))
        try:
            partitions = consumer.partitions_for_topic(self.topic)
        finally:
            consumer.close()
        if not partitions:
            raise ValueError(f"Kafka topic '{self.topic}' does not exist at {self.cfg.bootstrap_servers}")
        return (pbegin | "ListPartitions" >> beam.Create(sorted(partitions))
                | "ReadPartitions" >> beam.ParDo(ReadPartitionRange(self.cfg, self.topic, self.start, self.end)))


class ScanIndex(beam.DoFn):
    """Re-reads the posts whose redacted documents match a query string (for reprocessing).

    The query runs on the posts index; the raw posts come from the private index by id, in pages.
    """

    def __init__(self, cfg: ElasticsearchSettings, index: str, query: str) -> None:
        self.cfg, self.index, self.query = cfg, index, query

    def process(self, _: Any) -> Iterator[RawRecord]:
        es = elasticsearch_client(self.cfg)
        try:
            yield from raw_posts(es, self.cfg, self.index, matching_ids(es, self.index, self.query))
        finally:
            es.close()


def matching_ids(es: Any, index: str, query: str) -> Iterator[str]:
    """The ids of the documents of `index` that match a query string (their sources not fetched)."""
    hits = scan(es, index=index, query={"query": {"query_string": {"query": query}}, "_source": False}, size=500)
    return (hit["_id"] for hit in hits)


def raw_posts(es: Any, cfg: ElasticsearchSettings, index: str, ids: Iterable[str]) -> Iterator[RawRecord]:
    """The raw posts of these ids from the private index, in pages; also read per chunk of ids by
    pipeline/elementwise.py."""
    for page in pages(iter(ids), 500):
        for doc in es.mget(index=cfg.private_index, ids=page)["docs"]:
            if not doc.get("found"):
                # Without the raw post there is nothing to re-enrich; reprocessing copies the old document.
                Metrics.counter(SUMMARY_NAMESPACE, "raw_post_missing").inc()
                continue
            if doc["_source"].get("deleted_at"):
                # Its author deleted it and its raw text is gone: likewise copied as it is, still marked.
                Metrics.counter(SUMMARY_NAMESPACE, "deleted_post_kept").inc()
                continue
            post = {k: v for k, v in doc["_source"].items() if k in POST_FIELDS}
            yield RawRecord(post_payload(post), f"es:{index}/{doc['_id']}")


def pages(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterator into lists of `size` (the last may be shorter)."""
    page: list[str] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


class ReadIndex(beam.PTransform):
    def __init__(self, cfg: ElasticsearchSettings, index: str, query: str) -> None:
        super().__init__()
        self.cfg, self.index, self.query = cfg, index, query

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin | "Start" >> beam.Create([None])
                | "ScanIndex" >> beam.ParDo(ScanIndex(self.cfg, self.index, self.query))
                | "Redistribute" >> beam.Reshuffle())
