"""`triage stream` against live servers: delivery, dead letters, crashes, outages.

Runs against both local Kafka-compatible servers (noida-db, and the tansu broker with noida-db for
Elasticsearch), or once against the servers in TRIAGE_KAFKA_BOOTSTRAP / TRIAGE_ES_URL. Tests whose outcome
depends on the broker (group membership after kill -9, commits, dead letters with headers) run on both; those
about the job itself (every step end to end, group status, Elasticsearch outages) on noida-db only, where
services can also be stopped one by one. Workers are real `triage stream` processes. The delivery tests enrich with language and PII only (the guarantees
do not depend on the models and the suite stays fast); the end-to-end test runs every step.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from conftest import ROOT, SAMPLES, consume_all
from core import services
from core.clients import elasticsearch_client
from core.config import Settings, load_settings
from core.documents import doc_key
from core.provision import setup_all
from core.kafka_writer import producer
from pipeline.io.consumer_group import group_status

pytestmark = pytest.mark.integration
EXTERNAL = bool(os.environ.get("TRIAGE_KAFKA_BOOTSTRAP") or os.environ.get("TRIAGE_ES_URL"))
LIGHT_STEPS = ["language", "pii"]
SERVERS = ["external"] if EXTERNAL else ["noida", "tansu"]
one_server = pytest.mark.parametrize("kafka_server", SERVERS[:1], indirect=True)  # the job, not the broker, under test


@pytest.fixture(scope="module", params=SERVERS)
def kafka_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Services for this module: their own processes and ports, so outages here touch no other test."""
    if request.param == "external":
        yield {"name": "external", "overrides": {}}
        return
    kafka_port, es_port = services.free_port(), services.free_port()
    overrides = {"kafka": {"bootstrap_servers": f"127.0.0.1:{kafka_port}"},
                 "elasticsearch": {"url": f"http://127.0.0.1:{es_port}"},
                 "services": {"data_dir": str(tmp_path_factory.mktemp(request.param)), "kafka_server": request.param,
                              "kafka_port": kafka_port, "es_port": es_port}}
    cfg = load_settings(environ={f"TRIAGE_SERVICES__{k.upper()}": str(v)
                                 for k, v in overrides["services"].items()}).services
    services.up(cfg)
    try:
        yield {"name": request.param, "overrides": overrides, "services": cfg}
    finally:
        services.down(cfg)


class StreamHarness:
    """One test's topics, index and worker processes."""

    def __init__(self, server: dict, tmp_path: Path, steps: list[str] | None) -> None:
        name = f"s{random.randrange(16 ** 8):08x}"
        config = {**server["overrides"],
                  "kafka": {**server["overrides"].get("kafka", {}), "connect_timeout_s": 5, "request_timeout_s": 10,
                            "topics": {"raw": f"{name}.raw", "enriched": f"{name}.enriched",
                                       "dead_letter": f"{name}.dead"}},
                  "elasticsearch": {**server["overrides"].get("elasticsearch", {}), "index_prefix": name,
                                    "max_retries": 3, "retry_backoff_s": 0.2},
                  "stream": {"group_id": name, "metrics_port": 0, "max_outage_s": 120, "unassigned_warn_s": 5},
                  "logging": {"level": "INFO", "format": "json"}}
        if steps:
            config["enrichment"] = {"steps": steps}
        self.config_file = tmp_path / "stream.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.settings: Settings = load_settings(self.config_file)
        self.server = server
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp_path
        setup_all(self.settings)
        self.es = elasticsearch_client(self.settings.elasticsearch)
        self.producer = producer(self.settings.kafka)

    def start_worker(self, *extra: str) -> subprocess.Popen:
        log = open(self.logs / f"worker-{len(self.workers)}.log", "wb")
        env = dict(os.environ, TRIAGE_CONFIG=str(self.config_file), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "stream", *extra], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def produce(self, payloads: list[tuple[str | None, bytes]]) -> None:
        futures = [self.producer.send(self.settings.kafka.topics.raw, key=key.encode() if key else None, value=value)
                   for key, value in payloads]
        self.producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)  # a send that failed would otherwise look like a post the job lost

    def indexed_ids(self) -> list[str]:
        """The post ids in the index (one entry per redacted document), read back from the private documents."""
        from elasticsearch.helpers import scan
        cfg = self.settings.elasticsearch
        self.es.indices.refresh(index=[cfg.read_alias, cfg.private_index])
        keys = [hit["_id"] for hit in scan(self.es, index=cfg.read_alias, query={"query": {"match_all": {}}},
                                           _source=False)]
        raw = {hit["_id"]: hit["_source"]["id"] for hit in scan(self.es, index=cfg.private_index, _source=["id"],
                                                                 query={"query": {"match_all": {}}})}
        assert sorted(raw) == sorted(set(keys)), "every redacted document has its private one"
        return [raw[key] for key in keys]

    def count(self) -> int:
        alias = self.settings.elasticsearch.read_alias
        self.es.indices.refresh(index=alias)
        return int(self.es.count(index=alias)["count"])

    def wait_for_count(self, expected: int, timeout_s: float, what: str) -> None:
        """Wait until the index holds `expected` posts; on timeout, fail with the workers' last log lines."""
        try:
            wait_until(lambda: self.count() == expected, timeout_s, what)
        except AssertionError as exc:
            tails = [f"--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                     for log in sorted(self.logs.glob("worker-*.log"))]
            raise AssertionError(f"{exc} (index holds {self.count()})\n" + "\n".join(tails)) from None

    def consume(self, topic: str, expected: int, timeout_ms: int = 10_000) -> list[Any]:
        return consume_all(self.settings, topic, expected, timeout_ms)

    def stop_all(self) -> list[int]:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(timeout=60) for proc in self.workers]

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.producer.close()
        self.es.close()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _posts(n: int, prefix: str) -> list[tuple[str, bytes]]:
    samples = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    out = []
    for i in range(n):
        post = {**samples[i % len(samples)], "id": f"{prefix}:{i}"}
        out.append((post["id"], json.dumps(post, ensure_ascii=False).encode()))
    return out


@pytest.fixture
def harness_factory(kafka_server: dict, tmp_path: Path) -> Iterator[Callable[..., StreamHarness]]:
    made: list[StreamHarness] = []

    def make(steps: list[str] | None = LIGHT_STEPS) -> StreamHarness:
        harness = StreamHarness(kafka_server, tmp_path, steps)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@one_server
def test_posts_are_enriched_into_the_index_and_the_enriched_topic(harness_factory) -> None:
    h = harness_factory(steps=None)  # every configured step, models included
    worker = h.start_worker()
    posts = _posts(40, "e2e")
    h.produce(posts)
    h.wait_for_count(40, 180, "40 posts in the index")
    doc = h.es.get(index=h.settings.elasticsearch.read_alias, id=doc_key("e2e:0"))["_source"]
    assert {"language", "pii", "sentiment", "intent", "text_redacted"} <= set(doc)
    assert "_produced_ms" not in doc
    enriched = h.consume(h.settings.kafka.topics.enriched, 40)
    assert sorted(m.key.decode() for m in enriched) == sorted(key for key, _ in posts)
    assert h.stop_all() == [0]
    assert worker.returncode == 0


def test_poison_messages_go_to_dead_letters_and_neighbours_are_unaffected(harness_factory, kafka_server: dict) -> None:
    h = harness_factory()
    h.start_worker()
    poison = [(None, b"\x00\xff garbage bytes"), ("p:schema", b'{"id": "p:schema", "source": "twitter"}'),
              ("p:empty", b'{"id": "p:empty", "source": "twitter", "text": "  "}'),
              ("p:huge", json.dumps({"id": "p:huge", "source": "blog", "text": "x" * 5_000_000}).encode()),
              ("p:deep", b"[" * 10_000 + b"]" * 10_000)]  # once a RecursionError that crashed every start
    good = _posts(20, "good")
    h.produce(good[:10] + poison + good[10:])
    h.wait_for_count(20, 90, "the 20 good posts in the index")
    letters = h.consume(h.settings.kafka.topics.dead_letter, len(poison))
    reasons = sorted(dict(m.headers)["triage.reason_code"].decode() for m in letters)
    assert reasons == ["empty_text", "invalid_utf8", "nested_too_deep", "oversized_record", "schema_violation"]
    assert sorted(m.value for m in letters) == sorted(value for _, value in poison)
    for message in letters:
        assert dict(message.headers)["triage.origin"].decode().startswith(f"kafka:{h.settings.kafka.topics.raw}/")
    assert sorted(h.indexed_ids()) == sorted(key for key, _ in good)
    # The group's status as `triage stream --status` reads it: every offset committed, poison records included.
    status = lambda: group_status(h.settings.kafka, h.settings.stream.group_id, [h.settings.kafka.topics.raw])
    wait_until(lambda: status().lag == 0, 30, "every offset committed")
    described = status()
    if kafka_server["name"] == "tansu":  # kafka-python cannot parse tansu's group description: lag only
        assert "could not be read" in (described.note or "") and described.members == []
    elif kafka_server["name"] == "noida":
        assert len(described.members) == 1 and all(p.owner for p in described.partitions)
    assert h.stop_all() == [0]


def test_kill_9_at_random_moments_loses_nothing_and_indexes_once(harness_factory) -> None:
    h = harness_factory()
    posts = _posts(3000, "crash")
    producing = threading.Thread(target=lambda: [h.produce(posts[i:i + 250]) or time.sleep(0.5)
                                                 for i in range(0, len(posts), 250)])
    worker = h.start_worker()
    producing.start()
    rng = random.Random(4)
    for _ in range(3):
        time.sleep(rng.uniform(3, 8))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = h.start_worker()
    producing.join()
    h.wait_for_count(3000, 240, "3000 posts in the index")
    ids = h.indexed_ids()
    assert len(ids) == len(set(ids)) == 3000
    assert h.consume(h.settings.kafka.topics.dead_letter, 1, timeout_ms=3000) == []
    assert h.stop_all()[-1] == 0


def _log_events(log: Path) -> list[dict]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass  # Beam's and the runtime's own lines
    return events


def _first(events: list[dict], event: str) -> dict:
    return next(e for e in events if e.get("event") == event)


def _seconds(start: dict, end: dict) -> float:
    from datetime import datetime
    return (datetime.fromisoformat(end["ts"]) - datetime.fromisoformat(start["ts"])).total_seconds()


def test_a_killed_worker_is_replaced_and_its_replacement_consumes_within_30_s(harness_factory) -> None:
    """On noida-db a kill -9 once left the group rebalancing for good: the replacement got nothing.

    30 s, not less: a liveness bound (a stuck group never assigns), loose enough for a loaded 2-core machine."""
    h = harness_factory()
    posts = _posts(300, "replace")
    worker = h.start_worker()
    h.produce(posts[:150])
    h.wait_for_count(150, 120, "the first 150 posts")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    h.produce(posts[150:])
    h.start_worker()  # what a supervisor does: same host, same worker index, same instance id
    h.wait_for_count(300, 120, "all 300 posts after the replacement started")
    events = _log_events(h.logs / "worker-1.log")
    waited = _seconds(_first(events, "stream started"), _first(events, "partitions assigned"))
    assert waited < 30, f"the replacement waited {waited:.1f} s for its partitions"
    assert len(set(h.indexed_ids())) == 300
    assert h.stop_all()[-1] == 0


@one_server
def test_an_unassigned_worker_with_lag_warns_and_status_shows_the_group(harness_factory) -> None:
    """Only noida-db keeps a killed member for good, which is what leaves a worker unassigned."""
    h = harness_factory()
    first = h.start_worker("--instance-id", "first")
    h.produce(_posts(50, "status"))
    h.wait_for_count(50, 120, "50 posts")
    out = subprocess.run([sys.executable, "-m", "cli.main", "stream", "--status", "--json"], cwd=ROOT,
                         env=dict(os.environ, TRIAGE_CONFIG=str(h.config_file)), capture_output=True, text=True,
                         timeout=60)
    status = json.loads(out.stdout)
    assert status["group"] == h.settings.stream.group_id and status["lag"] == 0 and status["partitions"]
    if not EXTERNAL:
        assert [m["instance_id"] for m in status["members"]] == ["first"]
        assert {p["owner"] for p in status["partitions"]} == {"first"}
    else:  # an external Kafka may not keep a killed member: what follows is noida-db's behaviour
        assert h.stop_all() == [0]
        return
    first.send_signal(signal.SIGKILL)
    first.wait()
    h.produce(_posts(30, "behind"))
    h.start_worker("--instance-id", "second")  # not the dead worker's id: the broker waits for "first"
    wait_until(lambda: any(e.get("event", "").startswith("worker holds no partitions")
                           for e in _log_events(h.logs / "worker-1.log")), 90, "the unassigned warning")
    warning = next(e for e in _log_events(h.logs / "worker-1.log")
                   if e.get("event", "").startswith("worker holds no partitions"))
    assert warning["lag"] >= 30 and warning["instance"] == "second"
    out = subprocess.run([sys.executable, "-m", "cli.main", "stream", "--status"], cwd=ROOT,
                         env=dict(os.environ, TRIAGE_CONFIG=str(h.config_file)), capture_output=True, text=True,
                         timeout=60)
    assert "(unassigned)" in out.stdout and "member second" in out.stdout
    h.start_worker("--instance-id", "first")  # the dead worker's own id comes back: the group recovers
    h.wait_for_count(80, 120, "the 30 posts that waited")
    assert h.stop_all()[-1] == 0


def test_broker_restart_resumes_from_committed_offsets(harness_factory, kafka_server: dict) -> None:
    if kafka_server["name"] != "noida":
        pytest.skip("only noida-db restarts its broker with data kept (tansu stores in memory)")
    h = harness_factory()
    h.start_worker("--workers", "2")  # a supervisor with two workers in one consumer group
    posts = _posts(1000, "restart")
    h.produce(posts[:500])
    h.wait_for_count(500, 120, "the first 500 posts")
    services.noida_control(kafka_server["services"], "restart", "kafka")
    h.producer.close()
    h.producer = producer(h.settings.kafka)
    h.produce(posts[500:])
    h.wait_for_count(1000, 180, "all posts after the broker restart")
    assert len(set(h.indexed_ids())) == 1000
    assert h.stop_all() == [0]


def test_an_outage_longer_than_the_poll_interval_keeps_the_worker_in_its_group(harness_factory,
                                                                                kafka_server: dict) -> None:
    """Backpressure: while Elasticsearch is down the worker pauses its partitions and keeps polling.

    The sink once slept inside the bundle; an outage longer than max_poll_interval_s then made the
    worker leave its group, its commit failed and the batch was indexed and published again.
    """
    if kafka_server["name"] != "noida":
        pytest.skip("only noida-db stops Elasticsearch alone")
    poll_interval_s, outage_s = 10, 25
    h = harness_factory()
    config = yaml.safe_load(h.config_file.read_text())
    config["stream"]["max_poll_interval_s"] = poll_interval_s
    h.config_file.write_text(yaml.safe_dump(config))
    h.settings = load_settings(h.config_file)
    worker = h.start_worker()
    posts = _posts(600, "backpressure")
    h.produce(posts[:200])
    h.wait_for_count(200, 90, "the first 200 posts")
    services.noida_control(kafka_server["services"], "stop", "elasticsearch")
    try:
        for i in range(200, 600, 80):  # posts keep coming during the outage
            h.produce(posts[i:i + 80])
            time.sleep(outage_s / 5)
        assert worker.poll() is None, "the worker died during the outage"
    finally:
        services.noida_control(kafka_server["services"], "start", "elasticsearch")
    h.wait_for_count(600, 180, "the backlog to drain after the outage")
    ids = h.indexed_ids()
    assert len(ids) == len(set(ids)) == 600
    published = h.consume(h.settings.kafka.topics.enriched, 601, timeout_ms=5000)
    keys = [m.key.decode() for m in published]
    assert sorted(keys) == sorted(key for key, _ in posts), "every post published once: nothing redelivered"
    events = _log_events(h.logs / "worker-0.log")
    held = [e for e in events if e.get("event") == "elasticsearch unavailable, holding the batch"]
    assert held and max(e["waited_s"] for e in held) > poll_interval_s, "one bundle waited longer than the interval"
    assert not [e for e in events if e.get("event", "").startswith("offset commit failed")]
    assert not [e for e in events if e.get("event") == "partitions revoked"], "no rebalance"
    assert len([e for e in events if e.get("event") == "partitions assigned"]) == 1
    assert h.stop_all() == [0]


@one_server
def test_a_redelivered_conversation_leaves_its_case_as_it_was(harness_factory) -> None:
    """Two customer posts and the brand's answer in one thread make one answered case; the whole batch delivered
    again (a producer retry, a replayed topic) is counted once: the case is not even rewritten."""
    from triage.cases import case_key
    h = harness_factory()
    author = {"id": "u1", "handle": "kunde_u1", "name": "Kim Kunde"}
    conversation = [
        {"id": "twitter:5001", "source": "twitter", "text": "Seit heute früh geht mein Internet nicht.",
         "created_at": "2026-11-23T09:00:00Z", "thread_id": "twitter:5001", "author": author},
        {"id": "twitter:5002", "source": "twitter", "text": "Hallo? Immer noch kein Internet!",
         "created_at": "2026-11-23T09:05:00Z", "thread_id": "twitter:5001", "reply_to_id": "twitter:5001",
         "author": author},
        {"id": "twitter:5003", "source": "twitter", "text": "Das tut uns leid, wir schauen sofort nach.",
         "created_at": "2026-11-23T09:20:00Z", "thread_id": "twitter:5001", "reply_to_id": "twitter:5002",
         "author": {"id": "b1", "handle": "TelcoHilfe", "is_brand": True}}]
    batch = [(p["id"], json.dumps(p, ensure_ascii=False).encode()) for p in conversation]
    cfg = h.settings.elasticsearch
    case_id = case_key(conversation[0]).case_id

    def case() -> dict[str, Any]:
        h.es.indices.refresh(index=cfg.cases_read_alias)
        found = h.es.options(ignore_status=404).get(index=cfg.cases_read_alias, id=case_id)
        return found.body if found.get("found") else {}

    h.start_worker()
    h.produce(batch)
    wait_until(lambda: len(case().get("_source", {}).get("posts", [])) == 3, 120, "the case with all three posts")
    first = case()
    answered = first["_source"]
    assert (answered["customer_posts"], answered["brand_posts"], answered["status"]) == (2, 1, "answered")
    assert (answered["first_response_seconds"], answered["answered_via"]) == (1200.0, "channel")

    h.produce(batch)  # the same three records again
    status = lambda: group_status(h.settings.kafka, h.settings.stream.group_id, [h.settings.kafka.topics.raw])
    wait_until(lambda: status().lag == 0, 60, "the redelivered records committed (after their case writes)")
    again = case()
    assert (again["_source"]["customer_posts"], again["_source"]["brand_posts"], again["_source"]["status"],
            again["_source"]["first_response_seconds"]) == (2, 1, "answered", 1200.0)
    assert again == first  # same document, same _seq_no: nothing was written
    assert h.count() == 3 and h.stop_all() == [0]
