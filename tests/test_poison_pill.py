"""A record that keeps stopping the worker process is dead-lettered after a bounded number of attempts.

Parse errors are dead letters already (test_stream.py). These tests cover what a parser cannot catch: a
record on which the worker process itself dies (a native crash, an OOM kill). They drive the stream's
source, ReadKafkaStream, directly against the live Kafka, the way the runner does (one `process` call per
poll round, then the bundle finalizer), and "crash" a worker by closing its consumer without running the
finalizers, the way a killed process leaves things; the restart is a fresh DoFn under the same instance id.
No subprocess is needed, so each test takes a few seconds.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any, Callable, Iterator, Optional

import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import SAMPLES
from core.clients import kafka_options
from core.config import Settings, load_settings
from pipeline.io.kafka_stream import ReadKafkaStream
from core.records import DeadLetter, RawRecord, parse_post

POISON_OFFSET = 4


class Finalizer:
    """What the runner hands `process` as BundleFinalizerParam: callbacks to run once the bundle is written."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def register(self, fn: Callable[[], None]) -> None:
        self.callbacks.append(fn)

    def finalize(self) -> None:
        for fn in self.callbacks:
            fn()


class Topic:
    """A one-partition topic and consumer group of one test's own."""

    def __init__(self, settings: Settings) -> None:
        self.kafka = settings.kafka
        self.name = f"poison-{uuid.uuid4().hex[:8]}"
        self.group = f"{self.name}-group"
        self.tp = TopicPartition(self.name, 0)
        self.posts = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:10]]
        for i, post in enumerate(self.posts):
            post["id"] = f"{self.name}:{i}"
        admin = KafkaAdminClient(**kafka_options(self.kafka))
        try:
            admin.create_topics([NewTopic(self.name, 1, self.kafka.replication_factor)])
        finally:
            admin.close()
        producer = KafkaProducer(**kafka_options(self.kafka))
        try:
            futures = [producer.send(self.name, json.dumps(post).encode()) for post in self.posts]
            producer.flush(timeout=30)
            assert [f.get(timeout=30).offset for f in futures] == list(range(10))
        finally:
            producer.close()

    def committed(self) -> Any:
        """The group's committed OffsetAndMetadata for the partition (None when nothing was committed)."""
        consumer = KafkaConsumer(**kafka_options(self.kafka), group_id=self.group, enable_auto_commit=False)
        try:
            return consumer.committed(self.tp, metadata=True)
        finally:
            consumer.close()

    def delete(self) -> None:
        admin = KafkaAdminClient(**kafka_options(self.kafka))
        try:
            admin.delete_topics([self.name])
        finally:
            admin.close()


@pytest.fixture
def topic(live: Settings) -> Iterator[Topic]:
    made = Topic(live)
    yield made
    made.delete()


def worker(live: Settings, topic: Topic, max_record_attempts: int = 3) -> ReadKafkaStream:
    """A started source as one worker process has it; the same instance id every time, as a supervisor restarts."""
    stream = load_settings(environ={**os.environ, "TRIAGE_STREAM__POLL_TIMEOUT_MS": "100",
                                    "TRIAGE_STREAM__MAX_RECORD_ATTEMPTS": str(max_record_attempts)}).stream
    fn = ReadKafkaStream(live.kafka, [topic.name], topic.group, stream, instance_id=f"{topic.name}-0")
    fn.setup()
    return fn


def poll_round(fn: ReadKafkaStream, on_record: Callable[[RawRecord], None] = lambda r: None) -> Finalizer:
    """One `process` call (one bundle); on_record raising stands for the worker dying while processing."""
    tracker = RestrictionTrackerView(ThreadsafeRestrictionTracker(OffsetRestrictionTracker(OffsetRange(0, 2 ** 62))))
    finalizer = Finalizer()
    for value in fn.process(None, finalizer=finalizer, tracker=tracker, watermark=ManualWatermarkEstimator(None)):
        on_record(value.value)
    return finalizer


class Crash(Exception):
    pass


def offset(record: RawRecord) -> int:
    return int(record.origin.rsplit("/", 1)[1])


def run_worker(fn: ReadKafkaStream, delivered: list[RawRecord], crash_on: Optional[int] = None,
               rounds: int = 100) -> bool:
    """Poll rounds until all 10 records are delivered (True) or the worker dies on offset `crash_on` (False).

    A round's records count as delivered only once its bundle finalizer ran. A crash closes the consumer
    without committing and without finalizing, like a killed process.
    """
    for _ in range(rounds):
        seen: list[RawRecord] = []

        def process(record: RawRecord) -> None:
            if offset(record) == crash_on and record.failed_attempts == 0:
                raise Crash
            seen.append(record)
        try:
            finalizer = poll_round(fn, process)
        except Crash:
            fn._consumer.close(autocommit=False)
            return False
        finalizer.finalize()
        delivered.extend(seen)
        if delivered and offset(delivered[-1]) == 9:
            fn.teardown()
            return True
    fn.teardown()
    raise AssertionError(f"not all records came in {rounds} rounds: {[offset(r) for r in delivered]}")


@pytest.mark.integration
def test_a_record_that_keeps_killing_the_worker_is_dead_lettered_and_nothing_else_is_lost(
        live: Settings, topic: Topic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.io.kafka_stream")
    delivered: list[RawRecord] = []
    # 1st stop: the first bundle after the assignment, all 10 records in flight (attempt 1 on [0, 10)).
    assert run_worker(worker(live, topic), delivered, crash_on=POISON_OFFSET) is False
    assert json.loads(topic.committed().metadata) == {"attempt": 1, "alone": 0, "through": 10}
    # 2nd stop: the restart takes the range one record at a time; 0..3 pass, 4 stops it alone.
    assert run_worker(worker(live, topic), delivered, crash_on=POISON_OFFSET) is False
    assert [offset(r) for r in delivered] == [0, 1, 2, 3]
    committed = topic.committed()
    assert committed.offset == POISON_OFFSET
    assert json.loads(committed.metadata) == {"attempt": 2, "alone": 1, "through": 10}
    # 3rd stop: the same record alone again.
    assert run_worker(worker(live, topic), delivered, crash_on=POISON_OFFSET) is False
    assert json.loads(topic.committed().metadata) == {"attempt": 3, "alone": 2, "through": 10}
    # The next worker does not process it again: it comes as a poison record, and the partition moves on.
    assert run_worker(worker(live, topic), delivered, crash_on=POISON_OFFSET) is True

    assert [offset(r) for r in delivered] == list(range(10))  # each once, in order, none lost
    poison = delivered[POISON_OFFSET]
    assert poison.failed_attempts == 3
    assert poison.payload == json.dumps(topic.posts[POISON_OFFSET]).encode()
    assert [r.failed_attempts for r in delivered if r is not poison] == [0] * 9
    committed = topic.committed()
    assert (committed.offset, committed.metadata) == (10, "")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(r.getMessage().startswith("a worker stopped") for r in warnings)
    [dead] = [r for r in warnings if r.getMessage().startswith("poison record")]
    assert dead.fields == {"topic": topic.name, "partition": 0, "offset": POISON_OFFSET, "attempts": 3}
    assert all(topic.posts[POISON_OFFSET]["text"] not in r.getMessage() + str(getattr(r, "fields", ""))
               for r in caplog.records)


@pytest.mark.integration
def test_one_stop_for_another_reason_dead_letters_nothing(live: Settings, topic: Topic) -> None:
    """A crash no record caused (an OOM kill from elsewhere): every record is tried alone and passes."""
    delivered: list[RawRecord] = []
    assert run_worker(worker(live, topic, max_record_attempts=1), delivered, crash_on=POISON_OFFSET) is False
    assert run_worker(worker(live, topic, max_record_attempts=1), delivered) is True
    assert [offset(r) for r in delivered] == list(range(10))
    assert [r.failed_attempts for r in delivered] == [0] * 10
    assert (topic.committed().offset, topic.committed().metadata) == (10, "")


@pytest.mark.integration
def test_without_a_crash_everything_flows_and_the_only_extra_is_one_commit(live: Settings, topic: Topic) -> None:
    fn = worker(live, topic)
    records: list[RawRecord] = []
    finalizer = Finalizer()
    for _ in range(100):
        finalizer = poll_round(fn, records.append)
        if records:
            break
    assert [offset(r) for r in records] == list(range(10))  # one bundle, as before
    assert [r.failed_attempts for r in records] == [0] * 10
    # Before the bundle was written: attempt 1 recorded on its range (the one extra commit).
    assert (topic.committed().offset, json.loads(topic.committed().metadata)) == (
        0, {"attempt": 1, "alone": 0, "through": 10})
    finalizer.finalize()
    assert (topic.committed().offset, topic.committed().metadata) == (10, "")
    fn.teardown()


def test_parse_post_turns_failed_attempts_into_a_poison_record_dead_letter() -> None:
    payload = SAMPLES.read_bytes().splitlines()[0]
    assert isinstance(parse_post(RawRecord(payload, "kafka:t/0/4", 1), 1_000_000, 10_000), dict)
    letter = parse_post(RawRecord(payload, "kafka:t/0/4", 1, failed_attempts=3), 1_000_000, 10_000)
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code == "poison_record"
    assert letter.reason == "a worker stopped 3 times while processing this record"
    assert (letter.origin, letter.payload) == ("kafka:t/0/4", payload)
