"""`make bench-stream`: sustained throughput, produce-to-searchable latency and memory of `triage stream`.

One worker process runs against the configured Kafka and Elasticsearch with its own topics and index.
A producer sends posts at fixed rates (20, 50, 100 posts/s) for --duration seconds each, then 6,000
posts as fast as it can. A poller asks Elasticsearch for the ids still outstanding every 50 ms, so
each post's latency is the time from its send to the first moment it was found. On real
Elasticsearch a document becomes searchable at the next refresh (1 s by default); the local
stand-in makes it searchable on acknowledgement.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import yaml
from kafka import KafkaConsumer, TopicPartition

from cli.bench import read_posts
from core.clients import elasticsearch_client, kafka_options
from core.config import CONFIG_FILE_ENV, Settings, _deep_merge, load_settings
from core.documents import doc_key
from core.provision import setup_all, teardown_all
from core.redact import redact_url
from core.kafka_writer import producer

RATES: list[Optional[int]] = [20, 50, 100, None]  # None: as fast as possible
MAX_RATE_POSTS = 6000  # the flat-out phase sends this many (sending for a full duration would take hours to drain)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Poller(threading.Thread):
    """Marks each outstanding id with the time it first became visible in the index."""

    def __init__(self, es: Any, index: str) -> None:
        super().__init__(daemon=True)
        self.es, self.index = es, index
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                outstanding = [i for i in self.sent if i not in self.seen][:500]
            if outstanding:
                docs = self.es.mget(index=self.index, ids=outstanding, source=False)["docs"]
                now = time.monotonic()
                with self.lock:
                    for doc in docs:
                        if doc.get("found"):
                            self.seen[doc["_id"]] = now
            time.sleep(0.05)


def _lag(settings: Settings, group: str, topic: str) -> int:
    consumer = KafkaConsumer(**kafka_options(settings.kafka), group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = consumer.end_offsets(parts)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in parts)
    finally:
        consumer.close()


def bench_config(work: Path, config: Optional[str], overrides: dict[str, Any]) -> Path:
    """The worker's config file: the user's (--config, else $TRIAGE_CONFIG) with the benchmark's names merged in.

    Merged key by key, like load_settings does: the user's kafka.bootstrap_servers, security settings and
    the rest of each section survive the benchmark's own topics, index and group.
    """
    config = config or os.environ.get(CONFIG_FILE_ENV)  # the worker gets TRIAGE_CONFIG=this file, not the user's
    user = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}) if config else {}  # load_settings checked it
    path = work / "stream-bench.yaml"
    path.write_text(yaml.safe_dump(_deep_merge(user, overrides)))
    return path


def run(base: Settings, samples: str, duration_s: float, workdir: str, config: Optional[str]) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    name = f"bench{int(time.time())}"
    overrides = {"kafka": {"topics": {"raw": f"{name}.raw", "enriched": f"{name}.enriched",
                                      "dead_letter": f"{name}.dead"}},
                 "elasticsearch": {"index_prefix": name}, "stream": {"group_id": name, "metrics_port": 0},
                 "logging": {"level": "WARNING", "format": "json"}}
    config_file = bench_config(work, config, overrides)
    settings = load_settings(config_file)
    setup_all(settings)
    es = elasticsearch_client(settings.elasticsearch)
    kafka = producer(settings.kafka)
    env = dict(os.environ, TRIAGE_CONFIG=str(config_file))
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "stream"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(work / "stream-worker.log", "wb"))
    poller = _Poller(es, settings.elasticsearch.read_alias)
    poller.start()
    posts = read_posts(samples)
    counter = 0

    def send(phase: str, rate: Optional[int], seconds: float) -> list[str]:
        nonlocal counter
        ids, started = [], time.monotonic()
        while (time.monotonic() - started < seconds) if rate else len(ids) < MAX_RATE_POSTS:
            post = {**posts[counter % len(posts)], "id": f"{phase}:{counter}"}
            counter += 1
            with poller.lock:
                poller.sent[doc_key(post["id"])] = time.monotonic()  # the index knows posts by this key
            kafka.send(settings.kafka.topics.raw, key=post["id"].encode(), value=json.dumps(post).encode())
            ids.append(doc_key(post["id"]))
            if rate:
                time.sleep(max(0.0, started + len(ids) / rate - time.monotonic()))
        kafka.flush()
        return ids

    try:
        warm = send("warmup", 20, 5)  # model load and first bundles do not count
        _wait_for(poller, warm, 180)
        rows = []
        for rate in RATES:
            phase = f"rate{rate or 'max'}"
            started = time.monotonic()
            ids = send(phase, rate, duration_s)
            sent_s = time.monotonic() - started
            lag_end = len([i for i in ids if i not in poller.seen])
            _wait_for(poller, ids, 600)
            drained_s = max(poller.seen[i] for i in ids) - started
            latencies = [poller.seen[i] - poller.sent[i] for i in ids]
            rows.append({"rate": rate or "max", "posts": len(ids), "sent_per_s": len(ids) / sent_s,
                         "sustained_per_s": len(ids) / drained_s, "p50_s": _percentile(latencies, 0.5),
                         "p95_s": _percentile(latencies, 0.95), "p99_s": _percentile(latencies, 0.99),
                         "unindexed_when_sending_stopped": lag_end})
        # The last bundle's offsets are committed after its posts are indexed: allow the worker a moment.
        lag_checked = time.monotonic()
        while (consumer_lag := _lag(settings, name, settings.kafka.topics.raw)) and time.monotonic() - lag_checked < 30:
            time.sleep(1)
        lag_wait_s = time.monotonic() - lag_checked
    finally:
        poller.stopping.set()
        worker.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(worker.pid, 0)
        kafka.close()
        es.close()
        teardown_all(settings)  # left behind, every run's topics and index would slow the servers down
    print(f"Streaming benchmark: one worker, steps {', '.join(settings.enrichment.steps)}, {duration_s:.0f} s a phase, "
          f"{os.cpu_count()} CPUs, Kafka {settings.kafka.bootstrap_servers}, Elasticsearch {redact_url(settings.elasticsearch.url)}")
    print(f"{'rate':>6} {'posts':>7} {'sent/s':>8} {'sustained/s':>12} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} "
          f"{'behind at end':>14}")
    for r in rows:
        print(f"{r['rate']:>6} {r['posts']:>7} {r['sent_per_s']:>8.1f} {r['sustained_per_s']:>12.1f} {r['p50_s']:>7.2f} "
              f"{r['p95_s']:>7.2f} {r['p99_s']:>7.2f} {r['unindexed_when_sending_stopped']:>14}")
    peak_mb = usage.ru_maxrss / 1024
    print(f"consumer lag after the last phase drained: {consumer_lag} ({lag_wait_s:.0f} s after the last post was "
          f"indexed); worker peak RSS {peak_mb:.0f} MB; "
          f"worker exit code {os.waitstatus_to_exitcode(status)}")
    (work / "stream-results.json").write_text(json.dumps({"phases": rows, "consumer_lag": consumer_lag,
                                                          "lag_wait_s": lag_wait_s, "peak_rss_mb": peak_mb}, indent=1))
    return 0


def _wait_for(poller: _Poller, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with poller.lock:
            if all(i in poller.seen for i in ids):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{sum(1 for i in ids if i not in poller.seen)} posts not indexed after {timeout_s:.0f} s; "
                       "see .triage/bench/stream-worker.log")
