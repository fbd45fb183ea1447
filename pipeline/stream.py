"""`triage stream`: the continuous job, Kafka -> Beam (same enrichment as batch) -> Elasticsearch + Kafka.

Per bundle (one poll round of the source) the fused graph reads, enriches, bulk-indexes, publishes
the enriched posts and the dead letters, and only then commits the offsets it read (see
pipeline/io/kafka_stream.py). While Elasticsearch is down the job applies backpressure: the source's
partitions are paused and it keeps polling (so the worker stays in its consumer group, however short
stream.max_poll_interval_s) while the write retries with backoff for up to stream.max_outage_s; then
the worker exits non-zero so that a supervisor restarts it from the committed offsets.
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
from pipeline.io.kafka_stream import STOP, ReadKafkaStream, keep_membership
from pipeline.io.write import REJECTED_TAG, WRITTEN_TAG, WriteToElasticsearch, WriteToKafka
from pipeline.steps import registry

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


class IndexAndPublish(beam.PTransform):
    """Bulk-indexes a bundle's enriched posts, then publishes the acknowledged ones to the enriched topic;
    applies the bundle's deletions to the index with the same write; posts and deletions Elasticsearch
    rejects go to the dead-letter topic.

    Both writes happen per bundle (and every bulk_size posts), before the source's bundle finalizer
    commits the offsets: a crash anywhere before the commit means redelivery, never loss. While
    Elasticsearch is unavailable the write waits through the Kafka source (keep_membership: partitions
    paused, polls go on, the worker stays in its group) for up to stream.max_outage_s, then fails the
    worker, which restarts from the committed offsets. Input: (posts, deletions), kept apart because a
    Flatten would unfuse the graph; so the two writes of one bundle are not ordered against each other, which
    does not matter: a post written after its deletion leaves the deleted document as it is (io/elasticsearch.py).
    The outputs (pipeline/steps/registry.py: the cases) follow the acknowledged posts in the same bundle, with the
    same backpressure, so the offsets are committed only after their writes too; their dead letters are published.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, posts_and_deletions: tuple[beam.PCollection, beam.PCollection]) -> Any:
        posts, deletions = posts_and_deletions
        topics = self.settings.kafka.topics
        written = posts | "WriteToElasticsearch" >> self._write()
        marked = deletions | "MarkDeleted" >> self._write()
        written[WRITTEN_TAG] | "PublishEnriched" >> WriteToKafka(self.settings.kafka, topics.enriched, kind="posts",
                                                                 flush_every=self.settings.elasticsearch.bulk_size)
        outputs = registry.apply_outputs(written[WRITTEN_TAG], self.settings, wait=keep_membership,
                                         max_outage_s=self.settings.stream.max_outage_s)
        return tuple(rejected | label >> WriteToKafka(self.settings.kafka, topics.dead_letter, kind="dead_letters")
                     for label, rejected in (("PublishRejected", written[REJECTED_TAG]),
                                             ("PublishRejectedDeletions", marked[REJECTED_TAG]),
                                             *((f"PublishRejected[{name}]", letters) for name, letters in outputs)))

    def _write(self) -> WriteToElasticsearch:
        return WriteToElasticsearch(self.settings.elasticsearch, wait=keep_membership,
                                    max_outage_s=self.settings.stream.max_outage_s)


def build(pipeline: beam.Pipeline, settings: Settings, job: StreamJob) -> None:
    """The streaming graph. Kept fused (no Flatten, GroupByKey or windowing): see the module docstring."""
    cfg = settings.stream
    records = (pipeline | "Start" >> beam.Create([None])
               | "ReadKafka" >> beam.ParDo(ReadKafkaStream(settings.kafka, job.topics, job.group_id, cfg,
                                                                job.worker_instance_id())))
    enriched = records | "Enrich" >> EnrichPosts(settings)
    (enriched["enriched"], enriched["deletions"]) | "IndexAndPublish" >> IndexAndPublish(settings)
    for i, letters in enumerate(enriched["dead_letters"]):
        letters | f"PublishDeadLetters[{i}]" >> WriteToKafka(settings.kafka, settings.kafka.topics.dead_letter,
                                                             kind="dead_letters")


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
