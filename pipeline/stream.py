"""`triage stream`: the continuous job, Kafka -> Beam (same enrichment as batch) -> Elasticsearch + Kafka.

Per bundle (one poll round of the source) the fused graph reads, enriches, bulk-indexes, publishes
the enriched posts and the dead letters, and only then commits the offsets it read (see
pipeline/io/kafka_stream.py). While Elasticsearch is down the job waits with backoff for up to
stream.max_outage_s, then exits non-zero so that a supervisor restarts it from the committed offsets.
`--workers N` runs N such processes in one consumer group and restarts any that die.
"""
from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import observability
from core.clients import elasticsearch_client
from core.config import Settings
from pipeline.enrich import EnrichPosts
from pipeline.io.kafka_stream import STOP, ReadKafkaStream
from core.redact import redact_text
from core.records import DeadLetter, RawRecord, dead_letter, post_payload
from pipeline.io.elasticsearch import ElasticsearchBulkWriter, IndexUnavailable
from core.kafka_writer import KafkaWriter
from core.retry import backoff_delays

log = logging.getLogger("triage.stream")


@dataclass
class StreamJob:
    topics: list[str]
    group_id: str
    workers: int = 1
    metrics_port: int = 9464
    beam_args: Optional[list[str]] = None
    instance_id: Optional[str] = None  # static group membership; None: <hostname>-<worker index>

    def worker_instance_id(self, index: int = 0) -> str:
        """Worker `index`'s id: the same after every restart, so it takes its partitions back at once."""
        if self.workers == 1 and self.instance_id:
            return self.instance_id
        return f"{self.instance_id or socket.gethostname()}-{index}"


class IndexAndPublish(beam.DoFn):
    """Bulk-indexes each bundle's enriched posts, then publishes them; rejected ones become dead letters.

    Writing happens at the end of the bundle (or every bulk_size posts), before the source's bundle
    finalizer commits the offsets: a crash anywhere before the commit means redelivery, never loss.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self._es = elasticsearch_client(self.settings.elasticsearch)
        self._index = ElasticsearchBulkWriter(self._es, self.settings.elasticsearch)
        self._kafka = KafkaWriter(self.settings.kafka)

    def start_bundle(self) -> None:
        self._buffer: list[dict[str, Any]] = []

    def process(self, post: dict[str, Any]) -> None:
        self._buffer.append(post)
        if len(self._buffer) >= self.settings.elasticsearch.bulk_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        posts, self._buffer = self._buffer, []
        if not posts:
            return
        rejected = self._index_patiently(posts)
        acked_ms = time.time() * 1000
        observability.BATCH_SIZE.observe(len(posts))
        rejected_ids = {r.post["id"] for r in rejected}
        accepted = [p for p in posts if p["id"] not in rejected_ids]
        observability.POSTS_INDEXED.inc(len(accepted))
        for post in accepted:
            if post.get("_produced_ms"):
                observability.END_TO_END_SECONDS.observe(max(0.0, acked_ms - post["_produced_ms"]) / 1000)
        topics = self.settings.kafka.topics
        self._kafka.write_posts(topics.enriched, accepted)
        observability.POSTS_PUBLISHED.inc(len(accepted))
        if rejected:
            letters = [dead_letter("index_rejected", r.reason, RawRecord(post_payload(r.post), f"post:{r.post['id']}"))
                       for r in rejected]
            self._kafka.write_dead_letters(topics.dead_letter, letters)
            observability.DEAD_LETTERS.labels("index_rejected").inc(len(letters))

    def _index_patiently(self, posts: list[dict[str, Any]]) -> list[Any]:
        """Retry while Elasticsearch is unavailable, up to stream.max_outage_s; then fail the worker.

        A stop request during an outage fails at once: the batch cannot be flushed, its offsets stay
        uncommitted, and the next start re-reads it.
        """
        started = time.monotonic()
        delays = backoff_delays(1000, 1.0, cap_s=10.0)
        while True:
            try:
                return self._index.write(posts)
            except IndexUnavailable as exc:
                waited = time.monotonic() - started
                if waited > self.settings.stream.max_outage_s or STOP.is_set():
                    raise
                observability.INDEX_RETRIES.inc()
                log.warning("elasticsearch unavailable, holding the batch",
                            extra={"fields": {"posts": len(posts), "waited_s": round(waited), "error": redact_text(exc)[:200]}})
                time.sleep(next(delays))

    def teardown(self) -> None:
        self._kafka.close()
        self._es.close()


class PublishDeadLetters(beam.DoFn):
    """Writes a bundle's dead letters to the dead-letter topic before the bundle's offsets are committed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def setup(self) -> None:
        self._kafka = KafkaWriter(self.settings.kafka)

    def start_bundle(self) -> None:
        self._buffer: list[DeadLetter] = []

    def process(self, letter: DeadLetter) -> None:
        self._buffer.append(letter)

    def finish_bundle(self) -> None:
        letters, self._buffer = self._buffer, []
        if letters:
            self._kafka.write_dead_letters(self.settings.kafka.topics.dead_letter, letters)
            for letter in letters:
                observability.DEAD_LETTERS.labels(letter.reason_code).inc()

    def teardown(self) -> None:
        self._kafka.close()


def build(pipeline: beam.Pipeline, settings: Settings, job: StreamJob) -> None:
    """The streaming graph. Kept fused (no Flatten, GroupByKey or windowing): see the module docstring."""
    cfg = settings.stream
    records = (pipeline | "Start" >> beam.Create([None])
               | "ReadKafka" >> beam.ParDo(ReadKafkaStream(settings.kafka, job.topics, job.group_id, cfg,
                                                                job.worker_instance_id())))
    enriched = records | "Enrich" >> EnrichPosts(settings)
    enriched["enriched"] | "IndexAndPublish" >> beam.ParDo(IndexAndPublish(settings))
    for i, letters in enumerate(enriched["dead_letters"]):
        letters | f"PublishDeadLetters[{i}]" >> beam.ParDo(PublishDeadLetters(settings))


def check_connections(settings: Settings) -> None:
    """Fail fast, with advice, when Kafka or Elasticsearch cannot be reached at start."""
    from kafka import KafkaConsumer

    from core.clients import kafka_options
    es = elasticsearch_client(settings.elasticsearch)
    try:
        es.info()
    finally:
        es.close()
    consumer = KafkaConsumer(**kafka_options(settings.kafka), enable_auto_commit=False)
    try:
        missing = [t for t in [settings.kafka.topics.enriched, settings.kafka.topics.dead_letter]
                   if t not in consumer.topics()]
    finally:
        consumer.close()
    if missing:
        raise RuntimeError(f"Kafka topics {', '.join(missing)} do not exist; run `triage setup` first")


def _stop(signum: int, _frame: Any) -> None:
    if not STOP.is_set():
        log.info("stopping: finishing the current batch, committing, exiting", extra={"fields": {"signal": signum}})
    STOP.set()


def run_worker(settings: Settings, job: StreamJob) -> int:
    """One streaming pipeline in this process, until SIGTERM/SIGINT."""
    check_connections(settings)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    observability.serve(job.metrics_port, settings.stream.metrics_host)
    log.info("stream started", extra={"fields": {"topics": job.topics, "group": job.group_id,
                                                 "instance": job.worker_instance_id(),
                                                 "metrics_port": job.metrics_port}})
    args = ["--runner=FnApiRunner", "--streaming", *(job.beam_args or [])]
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        build(pipeline, settings, job)
    log.info("stream stopped")
    return 0


def run(settings: Settings, job: StreamJob, worker_argv: list[str]) -> int:
    """Run one worker here, or supervise `job.workers` worker processes (restarting any that die)."""
    if job.workers == 1:
        return run_worker(settings, job)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def spawn(i: int) -> subprocess.Popen[bytes]:
        port = str(job.metrics_port + i if job.metrics_port else 0)
        return subprocess.Popen([sys.executable, "-m", "cli.main", *worker_argv, "--workers", "1",
                                 "--metrics-port", port, "--instance-id", job.worker_instance_id(i)])

    workers = {i: spawn(i) for i in range(job.workers)}
    log.info("supervising workers", extra={"fields": {"workers": job.workers,
                                                       "pids": [w.pid for w in workers.values()]}})
    while not STOP.is_set():
        for i, proc in list(workers.items()):
            if proc.poll() is not None:
                log.warning("worker exited, restarting", extra={"fields": {"worker": i, "code": proc.returncode}})
                time.sleep(2)
                workers[i] = spawn(i)
        time.sleep(0.5)
    for proc in workers.values():
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait() for proc in workers.values()]
    return max(codes, default=0)
