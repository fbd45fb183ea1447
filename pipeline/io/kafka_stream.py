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

A record that makes the worker process die (a native crash, an OOM kill, a bug) is not a parse error
and would otherwise stop every replacement too, at the same committed offset, for good. So the
source keeps an attempts ledger in the metadata of the committed offset (JSON; it lives in Kafka, so
it holds across processes and hosts): `attempt` counts the workers that stopped while the record at
the committed offset may have been in flight, `alone` those of them during which it was the only
record in flight, and `through` ends the range a worker died in.

- Normal operation: the first time after an assignment that a partition's records are polled, and
  before they are yielded, the source commits (first offset, attempt n + 1, through: end of the
  poll), n being the attempt already recorded there. The finalizer commit that follows the bundle
  moves past it. That is one extra commit (and one committed-offset read) per partition per
  assignment, nothing else.
- A committed ledger with attempt >= 1 means a worker died in [offset, through): the partition is
  suspect until its position passes `through`. A round then yields ONE record of it and nothing
  else (the rest of the poll is re-read later), after committing (offset, attempt + 1, alone + 1),
  and only once the previous suspect round was finalized: the crash, if it comes, is the record's
  own. The finalizer moves to the next offset carrying the range's count (attempt - alone).
- A record with attempt >= stream.max_record_attempts that has been tried alone at least once is
  not processed again: it is yielded as RawRecord(failed_attempts=attempt), which parse_post turns
  into a `poison_record` dead letter, and the partition moves on.

A crash outside the first bundle after an assignment is not recorded; the restart's first bundle
then starts at that range and is, so a poison record costs at most one stop more than the limit. A
rebalance whose final commit fails looks like one stop to the ledger; it only narrows the range
(slower, no loss): dead-lettering needs a stop with the record alone in flight.

Backpressure (`keep_membership`): while a sink of the bundle waits for Elasticsearch, it waits through
this source, which pauses every assigned partition and keeps calling poll() (no records come while
paused) until the delay has passed, then resumes. The worker stays a member of its group however long
the outage lasts (kafka-python leaves the group when poll() is not called within
max.poll.interval.ms), and the bundle's offsets are committed only once its writes succeeded.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline import observability
from core import safe_json
from core.clients import kafka_options
from core.config import KafkaSettings, StreamSettings
from pipeline.io.consumer_group import GroupWatch
from core.records import RawRecord

log = logging.getLogger(__name__)
STOP = threading.Event()  # set on SIGTERM/SIGINT: the source stops polling and the pipeline drains
_MEMBER: Optional["ReadKafkaStream"] = None  # this process's source, for keep_membership
_HOLD_POLL_MS = 500  # how long each poll() of a hold blocks
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


class StopRequested(RuntimeError):
    """The job was asked to stop while a sink was waiting: the bundle fails, its offsets stay uncommitted."""


def keep_membership(delay_s: float) -> None:
    """The streaming sinks' `wait`: backpressure through this process's Kafka source (ReadKafkaStream.hold),
    or a plain sleep when there is none. A stop request (SIGTERM) ends the wait with StopRequested: the
    bundle cannot be written, so it fails and the next start re-reads it from the committed offsets."""
    if STOP.is_set():
        raise StopRequested("stop requested while waiting for a write; the batch will be re-read")
    member = _MEMBER
    if member is None:
        time.sleep(delay_s)
    else:
        member.hold(delay_s)
    if STOP.is_set():
        raise StopRequested("stop requested while waiting for a write; the batch will be re-read")


class FencedWorker(RuntimeError):
    """Another worker joined the group under this worker's instance id."""


_Admitted = dict[TopicPartition, list[tuple[Any, int]]]  # per partition: (message, failed_attempts) to yield
_Commits = dict[TopicPartition, OffsetAndMetadata]


@dataclass
class _Ledger:
    """The attempts ledger committed with a partition's offset (see the module docstring)."""
    attempt: int = 0  # workers that stopped while the record at this offset may have been in flight
    alone: int = 0  # ... of them while it was the only record in flight
    through: int = 0  # a worker died somewhere before this offset (the suspect range's end)

    @classmethod
    def read(cls, committed: Optional[OffsetAndMetadata], offset: int) -> "_Ledger":
        """The ledger that applies to the record at `offset`: empty when the commit is elsewhere or carries none.

        A commit just before `offset` inside its range counts too (the committed offset can be a gap of a
        compacted or transactional topic); its `alone` stops were not this record's.
        """
        if committed is None or committed.offset > offset or not committed.metadata:
            return cls()
        try:
            data = json.loads(committed.metadata)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def count(key: str) -> int:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
        attempt, alone, through = count("attempt"), min(count("alone"), count("attempt")), count("through")
        if committed.offset == offset:
            return cls(attempt, alone, through)
        return cls(attempt - alone, 0, through) if offset < through and attempt > alone else cls()

    def metadata(self) -> str:
        return json.dumps({"attempt": self.attempt, "alone": self.alone, "through": self.through},
                          separators=(",", ":"))


@dataclass
class _Suspect:
    """A partition a worker died in: one record per round until the position reaches `through`."""
    through: int
    inherited: int  # stops counted against every record of the range (the range's, not one record's)
    at: int  # the offset `ledger` was read for; any later record starts from `inherited`
    ledger: _Ledger


def _names(partitions: Any) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


class _LogAssignment(ConsumerRebalanceListener):
    """Logs every assignment change: the first thing to read when a worker seems idle."""

    def __init__(self, instance_id: str, on_assigned: Optional[Callable[[Any], None]] = None) -> None:
        self.instance_id = instance_id
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("partitions revoked", extra={"fields": {"instance": self.instance_id,
                                                             "partitions": _names(revoked)}})

    def on_partitions_assigned(self, assigned: Any) -> None:
        observability.ASSIGNED_PARTITIONS.set(len(assigned))
        if self.on_assigned is not None:
            self.on_assigned(assigned)
        log.info("partitions assigned", extra={"fields": {"instance": self.instance_id,
                                                          "partitions": _names(assigned)}})


class ReadKafkaStream(beam.DoFn):
    """Element: None (one per worker). Output: timestamped RawRecords from the assigned partitions."""

    def __init__(self, cfg: KafkaSettings, topics: list[str], group_id: str, stream: StreamSettings,
                 instance_id: str) -> None:
        self.cfg, self.topics, self.group_id, self.instance_id = cfg, topics, group_id, instance_id
        self.poll_timeout_ms, self.max_records = stream.poll_timeout_ms, stream.max_poll_records
        self.lateness_s, self.max_poll_interval_s = stream.allowed_lateness_s, stream.max_poll_interval_s
        self.unassigned_warn_s = stream.unassigned_warn_s
        self.max_record_attempts = stream.max_record_attempts
        # Bounded: without a timeout kafka-python retries a commit for as long as the coordinator is away.
        self._request_timeout_ms = int(cfg.request_timeout_s * 1000)

    def setup(self) -> None:
        self._consumer = KafkaConsumer(
            **kafka_options(self.cfg), group_id=self.group_id, group_instance_id=self.instance_id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_records,
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
            max_poll_interval_ms=int(self.max_poll_interval_s * 1000))
        self._unchecked: set[TopicPartition] = set()  # assigned; ledger not read yet
        self._unrecorded: set[TopicPartition] = set()  # ledger read, nothing wrong; first range not committed yet
        self._suspect: dict[TopicPartition, _Suspect] = {}
        self._suspect_in_flight: Optional[float] = None  # when the last suspect round's bundle started
        self._consumer.subscribe(self.topics, listener=_LogAssignment(self.instance_id, self._assigned))
        self._lag_checked = 0.0
        self._unassigned_since: Optional[float] = None
        self._watch: Optional[GroupWatch] = None
        self._watermark = Timestamp.of(0)
        self._thread: Optional[int] = None  # the thread that polls (process); only it may call the consumer
        global _MEMBER
        _MEMBER = self

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
        self._thread = threading.get_ident()
        if self._suspect and self._awaiting_suspect_round():
            time.sleep(self.poll_timeout_ms / 1000)  # a runner that finalizes late: one suspect record at a time
            tracker.defer_remainder(Duration.of(0))
            return
        polled = self._poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        admitted, commits, suspect_round = self._admit(polled)
        oldest_newest: Optional[float] = None
        for tp, messages in admitted.items():
            newest = 0.0
            for message, failed_attempts in messages:
                post_time = _post_time(message.value, message.timestamp)
                newest = max(newest, post_time)
                observability.RECORDS_IN.labels(tp.topic).inc()
                record = RawRecord(message.value or b"", f"kafka:{tp.topic}/{tp.partition}/{message.offset}",
                                   message.timestamp, failed_attempts)
                yield beam.window.TimestampedValue(record, post_time)
            oldest_newest = newest if oldest_newest is None else min(oldest_newest, newest)
        if commits:
            finalizer.register(functools.partial(self._commit, commits, suspect_round))
        if oldest_newest is not None:  # never moves back; posts older than this count as late
            self._watermark = max(self._watermark, Timestamp.of(oldest_newest - self.lateness_s))
            watermark.set_watermark(self._watermark)
        self._report_lag()
        tracker.defer_remainder(Duration.of(0))

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], suspect_round: Optional[float] = None) -> None:
        if suspect_round is not None and suspect_round == self._suspect_in_flight:
            self._suspect_in_flight = None
        try:
            self._consumer.commit(offsets, timeout_ms=self._request_timeout_ms)
            observability.COMMITS.labels("ok").inc()
        except KafkaError as exc:  # e.g. a rebalance moved the partition: the new owner re-reads, ids dedupe
            observability.COMMITS.labels("failed").inc()
            log.warning("offset commit failed; records will be redelivered",
                        extra={"fields": {"error": type(exc).__name__}})

    def _poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        try:
            return self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except FencedInstanceIdError:
            raise FencedWorker(f"another worker joined group {self.group_id} as instance {self.instance_id}; "
                               "give each worker its own --instance-id (or use --workers N)") from None

    def hold(self, delay_s: float) -> None:
        """Backpressure for `delay_s` seconds: pause every assigned partition and keep polling, then resume.

        Called by a sink of the bundle this source is in (keep_membership). Beam's FnApiRunner runs the
        fused bundle (this source's process, the enrichment, the sinks' process and finish_bundle) in one
        thread, the thread that polls, so calling the consumer here is safe; kafka-python's consumer is
        not thread-safe, so from any other thread this only sleeps. poll() while paused returns no
        records and resets the max.poll.interval.ms timer; it may run a rebalance (a partition revoked
        during the hold makes the bundle's later commit fail: logged and counted, records redelivered).
        """
        deadline = time.monotonic() + delay_s
        if self._thread != threading.get_ident():
            time.sleep(max(0.0, delay_s))
            return
        consumer = self._consumer
        paused = set(consumer.assignment())
        consumer.pause(*paused)
        try:
            while not STOP.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                began = time.monotonic()
                polled = self._poll(timeout_ms=int(min(left * 1000, _HOLD_POLL_MS)) or 1, max_records=1)
                for tp, messages in polled.items():  # not expected while paused; never skip a record
                    consumer.seek(tp, messages[0].offset)
                newly = set(consumer.assignment()) - set(consumer.paused())  # after a rebalance: pause those too
                if newly:
                    consumer.pause(*newly)
                    paused |= newly
                if time.monotonic() - began < 0.01:  # poll returned at once (nothing to wait on): do not spin
                    time.sleep(min(max(0.0, left), 0.1))
        finally:
            consumer.resume(*(paused & set(consumer.assignment())))

    # --- the attempts ledger (module docstring) ---

    def _assigned(self, assigned: Any) -> None:
        """Called inside poll() on every assignment: positions restart from the committed offsets."""
        self._unchecked = set(assigned)
        self._unrecorded.clear()
        self._suspect.clear()
        self._suspect_in_flight = None

    def _awaiting_suspect_round(self) -> bool:
        """True while the previous suspect round's bundle is not finalized (bounded: polls must go on)."""
        if self._suspect_in_flight is None:
            return False
        if time.monotonic() - self._suspect_in_flight < self.max_poll_interval_s / 2:
            return True
        self._suspect_in_flight = None
        return False

    def _admit(self, polled: dict[TopicPartition, list[Any]]) -> tuple[_Admitted, _Commits, Optional[float]]:
        """What this round yields ({tp: [(message, failed_attempts)]}), what its finalizer commits, and the
        suspect round's token (None for a normal round).

        Records not admitted are re-read: their partition is sought back to its first one not yielded.
        """
        for tp in [tp for tp in polled if tp in self._unchecked]:
            if not self._check(tp, polled[tp][0].offset):
                self._consumer.seek(tp, polled.pop(tp)[0].offset)
        suspect = next((tp for tp in sorted(polled) if tp in self._suspect), None)
        if suspect is not None:
            for tp, messages in polled.items():
                if tp != suspect:
                    self._consumer.seek(tp, messages[0].offset)
            return self._suspect_round(suspect, polled[suspect][0])
        if self._unrecorded & polled.keys():
            self._record_first_ranges(polled)
        return ({tp: [(m, 0) for m in messages] for tp, messages in polled.items()},
                {tp: OffsetAndMetadata(messages[-1].offset + 1, "", -1) for tp, messages in polled.items()}, None)

    def _check(self, tp: TopicPartition, first: int) -> bool:
        """Read tp's ledger the first time its records come after an assignment; False: retry next round."""
        try:
            ledger = _Ledger.read(self._consumer.committed(tp, metadata=True,
                                                           timeout_ms=self._request_timeout_ms), first)
        except KafkaError as exc:
            log.warning("could not read the committed offset's attempts ledger; retrying",
                        extra={"fields": {"topic": tp.topic, "partition": tp.partition, "error": type(exc).__name__}})
            return False
        self._unchecked.discard(tp)
        if ledger.attempt == 0:
            self._unrecorded.add(tp)
            return True
        through = max(ledger.through, first + 1)
        self._suspect[tp] = _Suspect(through, ledger.attempt - ledger.alone, first, ledger)
        log.warning("a worker stopped while processing these records; taking them one at a time",
                    extra={"fields": {"topic": tp.topic, "partition": tp.partition, "offset": first,
                                      "through": through, "attempts": ledger.attempt}})
        return True

    def _record_first_ranges(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """Before the first records of a partition after an assignment are yielded: attempt 1 on their range."""
        ranges = {tp: OffsetAndMetadata(messages[0].offset,
                                        _Ledger(1, 0, messages[-1].offset + 1).metadata(), -1)
                  for tp, messages in polled.items() if tp in self._unrecorded}
        try:
            self._consumer.commit(ranges, timeout_ms=self._request_timeout_ms)
        except KafkaError as exc:  # not recorded, so not yielded: this round re-reads them
            log.warning("could not record the attempt before processing; retrying",
                        extra={"fields": {"error": type(exc).__name__}})
            for tp in ranges:
                self._consumer.seek(tp, polled.pop(tp)[0].offset)
            return
        self._unrecorded -= ranges.keys()

    def _suspect_round(self, tp: TopicPartition, message: Any) -> tuple[_Admitted, _Commits, Optional[float]]:
        """One record of a suspect partition, alone: recorded as attempted first, or dead-lettered as poison."""
        state = self._suspect[tp]
        offset = message.offset
        self._consumer.seek(tp, offset + 1)  # the rest of this poll comes again, one per round
        ledger = state.ledger if offset == state.at else _Ledger(state.inherited, 0, state.through)
        fields = {"topic": tp.topic, "partition": tp.partition, "offset": offset, "attempts": ledger.attempt}
        if ledger.attempt >= self.max_record_attempts and ledger.alone >= 1:
            failed = ledger.attempt
            log.warning("poison record: workers kept stopping on it; sending it to dead letters",
                        extra={"fields": fields})
        else:
            failed = 0
            attempt = _Ledger(ledger.attempt + 1, ledger.alone + 1, state.through)
            try:
                self._consumer.commit({tp: OffsetAndMetadata(offset, attempt.metadata(), -1)},
                                      timeout_ms=self._request_timeout_ms)
            except KafkaError as exc:  # not recorded, so not yielded
                log.warning("could not record the attempt before processing; retrying",
                            extra={"fields": {**fields, "error": type(exc).__name__}})
                self._consumer.seek(tp, offset)
                return {}, {}, None
            state.at, state.ledger = offset, attempt
        after = offset + 1
        if after < state.through:  # the next record inherits the range's stops
            metadata = _Ledger(state.inherited, 0, state.through).metadata() if state.inherited else ""
        else:
            metadata = ""
            del self._suspect[tp]
            log.info("suspect records passed", extra={"fields": {"topic": tp.topic, "partition": tp.partition,
                                                                  "through": state.through}})
        self._suspect_in_flight = time.monotonic()
        return {tp: [(message, failed)]}, {tp: OffsetAndMetadata(after, metadata, -1)}, self._suspect_in_flight

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
        """A worker without partitions is fine while the group keeps up; not while posts pile up.

        The group's lag is only looked up once the worker has been unassigned for unassigned_warn_s
        (a join takes a few seconds), through a GroupWatch of its own (see pipeline/io/consumer_group.py).
        """
        self._unassigned_since = self._unassigned_since or now
        waited = now - self._unassigned_since
        if waited < self.unassigned_warn_s:
            return
        try:
            self._watch = self._watch or GroupWatch(self.cfg, self.group_id, self.topics)
            lags = self._watch.lags()
        except KafkaError:
            return
        lag = sum(p.lag for p in lags)
        for topic in self.topics:
            observability.GROUP_LAG.labels(topic).set(sum(p.lag for p in lags if p.topic == topic))
        observability.UNASSIGNED_SECONDS.set(waited if lag else 0)
        if lag:
            log.warning("worker holds no partitions while its group has lag; see `triage stream --status`",
                        extra={"fields": {"group": self.group_id, "instance": self.instance_id,
                                          "lag": lag, "unassigned_s": round(waited)}})

    def teardown(self) -> None:
        global _MEMBER
        if _MEMBER is self:
            _MEMBER = None
        if self._watch:
            self._watch.close()
        self._consumer.close(autocommit=False)
