"""The unbounded Kafka source of `triage stream`: kafka-python inside a splittable DoFn.

Beam's ReadFromKafka is a Java cross-language transform (it needs a JVM and Maven Central), so the
job reads Kafka from Python. One consumer per worker process joins the consumer group, so Kafka
spreads partitions over workers and moves a dead worker's partitions to the others.

Each call of `process` is one poll round: a blocking poll (an idle job sleeps in it instead of
spinning a core), the records as elements, then `defer_remainder` to be called again. The offsets
read in a round are committed by the bundle finalizer, which Beam runs only after every fused
downstream step of that bundle (enrichment, the Elasticsearch bulk write, the enriched and
dead-letter topics) has finished: at-least-once, and redelivered posts overwrite their own
document because the document id is the post id.

Each worker joins with a static group instance id (`group.instance.id`, KIP-345): a worker that is
restarted after a crash rejoins under the same id and takes its partitions back at once. Without it,
a broker that does not expire a killed member (noida-db, the local default) kept the group in a
rebalance that never finished, and the replacement consumed nothing. A worker that holds no
partitions while its group has lag says so (a warning, `triage_unassigned_seconds`), and
`triage stream --status` shows members, assignment and lag.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import datetime
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline import observability, safe_json
from pipeline.clients import kafka_options
from pipeline.config import KafkaSettings, StreamSettings
from pipeline.io.consumer_group import partition_lags
from pipeline.records import RawRecord

log = logging.getLogger(__name__)
STOP = threading.Event()  # set on SIGTERM/SIGINT: the source stops polling and the pipeline drains
_FOREVER = 2 ** 62
_LAG_EVERY_S = 5.0


class _PollRounds(RestrictionProvider):
    """The restriction is a count of poll rounds; it never ends until the job is asked to stop."""

    def initial_restriction(self, element: Any) -> OffsetRange:
        return OffsetRange(0, _FOREVER)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 1

    def truncate(self, element: Any, restriction: OffsetRange) -> None:
        return None  # on drain, no more rounds


class _PostTimeWatermark(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: Any, restriction: OffsetRange) -> Optional[Timestamp]:
        return None

    def create_watermark_estimator(self, state: Optional[Timestamp]) -> ManualWatermarkEstimator:
        return ManualWatermarkEstimator(state)


def _post_time(value: Optional[bytes], fallback_ms: int) -> float:
    """The post's created_at (seconds), or the Kafka timestamp when the record has none or is not JSON."""
    try:
        created = safe_json.loads(value or b"{}").get("created_at")
        if created:
            return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, TypeError):
        pass
    return fallback_ms / 1000


class FencedWorker(RuntimeError):
    """Another worker joined the group under this worker's instance id."""


class _LogAssignment(ConsumerRebalanceListener):
    """Logs every assignment change: the first thing to read when a worker seems idle."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("partitions revoked", extra={"fields": {"instance": self.instance_id,
                                                             "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in revoked)}})

    def on_partitions_assigned(self, assigned: Any) -> None:
        observability.ASSIGNED_PARTITIONS.set(len(assigned))
        log.info("partitions assigned", extra={"fields": {"instance": self.instance_id,
                                                          "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)}})


class ReadKafkaStream(beam.DoFn):
    """Element: None (one per worker). Output: timestamped RawRecords from the assigned partitions."""

    def __init__(self, cfg: KafkaSettings, topics: list[str], group_id: str, stream: StreamSettings,
                 instance_id: str) -> None:
        self.cfg, self.topics, self.group_id, self.instance_id = cfg, topics, group_id, instance_id
        self.poll_timeout_ms, self.max_records = stream.poll_timeout_ms, stream.max_poll_records
        self.lateness_s, self.max_poll_interval_s = stream.allowed_lateness_s, stream.max_poll_interval_s
        self.unassigned_warn_s = stream.unassigned_warn_s

    def setup(self) -> None:
        self._consumer = KafkaConsumer(
            **kafka_options(self.cfg), group_id=self.group_id, group_instance_id=self.instance_id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_records,
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
            max_poll_interval_ms=int(self.max_poll_interval_s * 1000))
        self._consumer.subscribe(self.topics, listener=_LogAssignment(self.instance_id))
        self._lag_checked = 0.0
        self._unassigned_since: Optional[float] = None
        self._watermark = Timestamp.of(0)

    def process(self, _: Any, finalizer: Any = beam.DoFn.BundleFinalizerParam,  # must precede the tracker
                tracker: OffsetRestrictionTracker = beam.DoFn.RestrictionParam(_PollRounds()),
                watermark: ManualWatermarkEstimator = beam.DoFn.WatermarkEstimatorParam(_PostTimeWatermark())
                ) -> Iterator[Any]:
        round_ = tracker.current_restriction().start
        if STOP.is_set():
            tracker.try_claim(_FOREVER - 1)  # claim every remaining round: the restriction is done
            return
        if not tracker.try_claim(round_):
            return
        try:
            polled = self._consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        except FencedInstanceIdError:
            raise FencedWorker(f"another worker joined group {self.group_id} as instance {self.instance_id}; "
                               "give each worker its own --instance-id (or use --workers N)") from None
        next_offsets: dict[TopicPartition, int] = {}
        oldest_newest: Optional[float] = None
        for tp, messages in polled.items():
            newest = 0.0
            for message in messages:
                post_time = _post_time(message.value, message.timestamp)
                newest = max(newest, post_time)
                observability.RECORDS_IN.labels(tp.topic).inc()
                record = RawRecord(message.value or b"", f"kafka:{tp.topic}/{tp.partition}/{message.offset}",
                                   message.timestamp)
                yield beam.window.TimestampedValue(record, post_time)
            next_offsets[tp] = messages[-1].offset + 1
            oldest_newest = newest if oldest_newest is None else min(oldest_newest, newest)
        if next_offsets:
            finalizer.register(functools.partial(self._commit, next_offsets))
        if oldest_newest is not None:  # never moves back; posts older than this count as late
            self._watermark = max(self._watermark, Timestamp.of(oldest_newest - self.lateness_s))
            watermark.set_watermark(self._watermark)
        self._report_lag()
        tracker.defer_remainder(Duration.of(0))

    def _commit(self, next_offsets: dict[TopicPartition, int]) -> None:
        try:
            # Bounded: without a timeout kafka-python retries a commit for as long as the coordinator is away.
            self._consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in next_offsets.items()},
                                  timeout_ms=int(self.cfg.request_timeout_s * 1000))
            observability.COMMITS.labels("ok").inc()
        except KafkaError as exc:  # e.g. a rebalance moved the partition: the new owner re-reads, ids dedupe
            observability.COMMITS.labels("failed").inc()
            log.warning("offset commit failed; records will be redelivered",
                        extra={"fields": {"error": type(exc).__name__}})

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_checked < _LAG_EVERY_S:
            return
        self._lag_checked = now
        assigned = list(self._consumer.assignment())
        observability.ASSIGNED_PARTITIONS.set(len(assigned))
        if not assigned:
            self._watch_unassigned(now)
            return
        self._unassigned_since = None
        observability.UNASSIGNED_SECONDS.set(0)
        try:
            ends = self._consumer.end_offsets(assigned)
            for tp in assigned:
                observability.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, ends[tp] - self._consumer.position(tp)))
        except KafkaError:
            pass

    def _watch_unassigned(self, now: float) -> None:
        """A worker without partitions is fine while the group keeps up; not while posts pile up."""
        try:
            lags = partition_lags(self._consumer, self.topics)
        except KafkaError:
            return
        for topic in self.topics:
            observability.GROUP_LAG.labels(topic).set(sum(p.lag for p in lags if p.topic == topic))
        if not any(p.lag for p in lags):
            self._unassigned_since = None
            observability.UNASSIGNED_SECONDS.set(0)
            return
        self._unassigned_since = self._unassigned_since or now
        waited = now - self._unassigned_since
        observability.UNASSIGNED_SECONDS.set(waited)
        if waited >= self.unassigned_warn_s:
            log.warning("worker holds no partitions while its group has lag; see `triage stream --status`",
                        extra={"fields": {"group": self.group_id, "instance": self.instance_id,
                                          "lag": sum(p.lag for p in lags), "unassigned_s": round(waited)}})

    def teardown(self) -> None:
        self._consumer.close(autocommit=False)
