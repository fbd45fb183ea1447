"""Case maintenance in batch, stream and reprocess: after a bundle's posts are indexed, their cases are updated.

`MaintainCases` is registered as the output `cases` (entry-point group `triage.outputs`, see
pipeline/steps/registry.py) and applied by pipeline/batch.py and pipeline/stream.py to the posts the index
acknowledged. Why an output and not an enrichment step: a step runs before indexing, inside RunInference's
batching and failure handling, whereas a case must only ever name posts the index holds, and its write is a
read-modify-write of another index. Why an entry point: the pipeline layer must not import triage/, and this is
how it already finds the routing step.

Per flush (every `elasticsearch.bulk_size` posts and at the end of each bundle, like the index writes, so in the
stream the offsets are committed only after the case writes were acknowledged) the posts are grouped by case,
the case documents read with one mget, merged (triage/cases.py) and written with one bulk request: an existing
document with `if_seq_no`/`if_primary_term` of the version read, a new one with `create`. A 409 (someone, e.g.
`triage reply` or another worker, changed or created the case since) reads that case again and merges again;
merging is idempotent, so a retry or a redelivered bundle never counts a post twice. A case the index refuses,
or one still conflicting after a few rounds, becomes one dead letter per post (reason code `case_write_failed`,
the case id and reason; replaying the post repairs the case). While Elasticsearch is unavailable the write
waits like the posts' write does (pipeline/io/write.py: write_patiently), then fails the bundle.

With `handoff.targets_file` set, every case of the flush that is now up to date (written, or already holding
its posts) is then announced on `kafka.topics.case_updates` as `{"case_id", "updated_at"}` keyed by the case id,
for `triage handoff` (apps/handoff.py), still inside the flush, so before the stream commits the bundle's
offsets. Cases already up to date are announced too because a crash between the case write and the
announcement leaves exactly that on redelivery: the case holds the post, and only announcing it again keeps the
announcement from being lost (the handoff is idempotent, duplicates cost one read). Only the id travels: the
handoff reads the case as it is when it gets to it.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch

from core.clients import elasticsearch_client
from core.config import ElasticsearchSettings, Settings
from core.kafka_writer import KafkaWriter
from core.records import RawRecord, dead_letter, post_payload
from core.redact import redact_url
from core.retry import backoff_delays
from core.timestamps import utc_now
from pipeline.enrich import SUMMARY_NAMESPACE
from pipeline.io.elasticsearch import RETRYABLE_STATUS, IndexUnavailable
from pipeline.io.write import BundleBuffer, write_patiently
from triage.cases import Case, CaseKey, Post, case_key, merge_all

log = logging.getLogger(__name__)
REASON_CODE = "case_write_failed"
_ATTEMPTS = 8  # read-merge-write rounds per flush before a case that keeps changing becomes dead letters
Groups = dict[str, tuple[CaseKey, list[Post]]]


class CasesIndexMissing(RuntimeError):
    """The cases index (its write alias) does not exist: `triage setup` creates it."""


class CasesIndex:
    """Reads and writes case documents with optimistic concurrency; `update` merges posts into their cases."""

    def __init__(self, es: Elasticsearch, cfg: ElasticsearchSettings, wait: Callable[[float], None],
                 max_outage_s: float = 0.0) -> None:
        self.es = es.options(max_retries=0, retry_on_status=())  # retries are ours: bounded, with backoff
        self.cfg, self.wait, self.max_outage_s = cfg, wait, max_outage_s
        self._index_checked = False
        self.settled: dict[str, str] = {}  # of the last `update`: case id -> updated_at of the cases now up to date

    def update(self, groups: Groups) -> tuple[int, dict[str, str]]:
        """Merge each case's posts into its document. Returns (documents written, {case id: reason} of failures)."""
        self._require_index()
        self.settled = {}
        pending, failed, written = dict(groups), {}, 0
        delays = backoff_delays(_ATTEMPTS, self.cfg.retry_backoff_s)
        for _ in range(_ATTEMPTS):
            if not pending:
                break
            done, pending, refused, throttled = self._round(pending)
            written, failed = written + done, {**failed, **refused}
            if throttled:
                self.wait(next(delays, self.cfg.retry_backoff_s))
        failed.update({cid: f"still conflicting or throttled after {_ATTEMPTS} attempts" for cid in pending})
        for cid, reason in failed.items():
            log.warning("case not updated", extra={"fields": {"case_id": cid, "reason": reason,
                                                               "posts": len(groups[cid][1])}})
        return written, failed

    def _require_index(self) -> None:
        if not self._index_checked:
            if not self._patiently(lambda: self.es.indices.exists_alias(name=self.cfg.cases_write_alias), 0):
                raise CasesIndexMissing(f"the cases index {self.cfg.cases_write_alias} does not exist; "
                                        "run `triage setup` (or set cases.enabled: false)")
            self._index_checked = True

    def _round(self, pending: Groups) -> tuple[int, Groups, dict[str, str], bool]:
        """One read-merge-write of the pending cases: (written, to retry, refused with reasons, any throttled)."""
        current = self._patiently(lambda: self._read(list(pending)), len(pending))
        writes = []
        for cid, (key, posts) in pending.items():
            found = current.get(cid)
            before = found["_source"] if found else None
            case = merge_all(before, posts, key)
            if case is not before:  # merge returns the very same case when every post was in it
                writes.append((cid, found, {**case, "updated_at": utc_now()}))
            elif case is not None:
                self.settled[cid] = case.get("updated_at") or ""
        results = self._patiently(lambda: self._write(writes), len(writes)) if writes else []
        written, retry, refused, throttled = 0, {}, {}, False
        for (cid, _, case), result in zip(writes, results):
            status = result.get("status", 500)
            if status < 300:
                written += 1
                self.settled[cid] = case["updated_at"]
            elif status == 409 or status in RETRYABLE_STATUS:  # changed since we read it, or throttled
                retry[cid] = pending[cid]
                throttled = throttled or status != 409
            else:
                refused[cid] = f"the cases index refused it: HTTP {status} {(result.get('error') or {}).get('type')}"
        return written, retry, refused, throttled

    def _read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        docs = self.es.mget(index=self.cfg.cases_read_alias, ids=ids)["docs"]
        return {doc["_id"]: doc for doc in docs if doc.get("found")}

    def _write(self, writes: list[tuple[str, Optional[dict[str, Any]], Case]]) -> list[dict[str, Any]]:
        lines = []
        for cid, found, case in writes:
            if found:
                meta = {"index": {"_index": found["_index"], "_id": cid, "if_seq_no": found["_seq_no"],
                                  "if_primary_term": found["_primary_term"]}}
            else:
                meta = {"create": {"_index": self.cfg.cases_write_alias, "_id": cid}}
            lines += [json.dumps(meta), json.dumps(case, ensure_ascii=False)]
        response = self.es.bulk(operations="\n".join(lines) + "\n")
        return [next(iter(item.values())) for item in response["items"]]

    def _patiently(self, call: Callable[[], Any], size: int) -> Any:
        return write_patiently(lambda: self._bounded(call), size, self.wait, self.max_outage_s)

    def _bounded(self, call: Callable[[], Any]) -> Any:
        """`call()`, retried with backoff on throttling, 5xx and network errors; then IndexUnavailable."""
        delays = backoff_delays(self.cfg.max_retries, self.cfg.retry_backoff_s)
        while True:
            try:
                return call()
            except (TransportConnectionError, ConnectionTimeout, ApiError) as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(exc, ApiError) and status not in RETRYABLE_STATUS:
                    raise IndexUnavailable(f"cases request refused: HTTP {status} {exc.error}") from exc
                delay = next(delays, None)
                if delay is None:
                    raise IndexUnavailable(f"Elasticsearch at {redact_url(self.cfg.url)} did not answer the cases "
                                           f"request after {self.cfg.max_retries} retries "
                                           f"({f'HTTP {status}' if status else type(exc).__name__})") from exc
                self.wait(delay)


class _UpdateCases(beam.DoFn):
    """Buffers a bundle's acknowledged posts and updates their cases every flush_every posts and at its end;
    outputs the dead letters of posts whose case could not be written."""

    def __init__(self, settings: Settings, wait: Callable[[float], None], max_outage_s: float) -> None:
        self.cfg, self.window_hours = settings.elasticsearch, settings.cases.author_window_hours
        self.kafka = settings.kafka
        self.updates_topic = settings.kafka.topics.case_updates if settings.handoff.targets_file else None
        self.wait, self.max_outage_s = wait, max_outage_s

    def setup(self) -> None:  # no request here: a failure to reach Elasticsearch is the index write's to report
        self._es = elasticsearch_client(self.cfg)
        self._store = CasesIndex(self._es, self.cfg, self.wait, self.max_outage_s)
        self._updates = KafkaWriter(self.kafka) if self.updates_topic else None

    def start_bundle(self) -> None:
        self._buffer = BundleBuffer()

    def process(self, item: Any, timestamp: Any = beam.DoFn.TimestampParam,
                window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
        if not isinstance(item, dict):  # a deletion: its post stays in its case (counts of the past do not shrink)
            return
        self._buffer.add(item, timestamp, window)
        if len(self._buffer) >= self.cfg.bulk_size:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        items = [(post, case_key(post, self.window_hours), timestamp, window)
                 for post, timestamp, window in self._buffer.take()]
        if not items:
            return
        groups: Groups = {}
        for post, key, _, _ in items:
            groups.setdefault(key.case_id, (key, []))[1].append(post)
        written, failed = self._store.update(groups)
        Metrics.counter(SUMMARY_NAMESPACE, "cases_updated").inc(written)
        self._announce(self._store.settled)
        for post, key, timestamp, window in items:
            if key.case_id in failed:
                letter = dead_letter(REASON_CODE, f"case {key.case_id}: {failed[key.case_id]}",
                                     RawRecord(post_payload(post), f"case:{key.case_id}"))
                yield WindowedValue(letter, timestamp, (window,))

    def _announce(self, settled: dict[str, str]) -> None:
        """Publish the flush's cases for the handoff; acknowledged before the flush returns (see the docstring)."""
        if self._updates is None or not settled:
            return
        self._updates.write_records(self.updates_topic, (
            (cid.encode("utf-8"), json.dumps({"case_id": cid, "updated_at": at}).encode("utf-8"))
            for cid, at in settled.items()))

    def teardown(self) -> None:
        self._es.close()
        if self._updates is not None:
            self._updates.close()


def _sleep(delay_s: float) -> None:
    time.sleep(delay_s)


def _nothing(_: Any) -> Iterator[Any]:
    return iter(())


class MaintainCases(beam.PTransform):
    """Posts the index acknowledged -> their cases updated; returns PCollection[DeadLetter] of failed case writes.

    The output contract of `triage.outputs`: built with (settings, wait, max_outage_s) like the index write.
    With `cases.enabled: false` it writes nothing."""

    def __init__(self, settings: Settings, wait: Optional[Callable[[float], None]] = None,
                 max_outage_s: float = 0.0) -> None:
        super().__init__()
        self.settings, self.wait, self.max_outage_s = settings, wait or _sleep, max_outage_s

    def expand(self, posts: beam.PCollection) -> beam.PCollection:
        if not self.settings.cases.enabled:
            return posts | "CasesDisabled" >> beam.FlatMap(_nothing)
        return posts | "UpdateCases" >> beam.ParDo(_UpdateCases(self.settings, self.wait, self.max_outage_s))
