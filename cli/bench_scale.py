"""`triage bench scale`: the scale-out figures in one run, each with what limits it.

Why one command: batch on FnApiRunner and on Beam's DaskRunner, the stream with 1 and N workers, a worker's
failover, `triage reprocess` and the product's queries are only comparable when measured on the same posts, the
same machine and the same day. Everything runs against the configured Kafka and Elasticsearch under names of its
own (index prefixes `triage-benchscale` and `benchscale-*`, topics `benchscale-*`), removed at the end.

1. Batch: `--batch-n` posts from `triage generate`, JSONL -> JSONL (the engine, not the index, is measured), in a process
   of its own per run (wall time, peak RSS, CPU from wait4): FnApiRunner, then a `triage dask up`-style cluster
   (core/dask_cluster.py) with each of `--workers`, counted from the output.
2. Stream: `triage stream --workers N` for each of `--workers` (its supervisor and N worker processes in one
   consumer group), `min(batch_n, 6000)` posts sent flat out, timed until the last is searchable (cli/bench_stream.py's
   poller). Then failover: the largest worker count at a quarter of the one-worker rate (a load one worker can
   carry on a busy machine), one worker killed with SIGKILL, timed until every partition is consumed again and
   until the group's lag is back to what it was before the kill. Neither local broker expires a killed static
   member (noida-db keeps its group rebalancing; tansu 0.6 rebalanced but left the dead member its partitions), so
   the recovery measured is the supervisor's restart of the worker under the same member id; on Kafka the member
   leaves after its session timeout and the others take its partitions.
3. Reprocess: `--n` posts indexed, then `triage reprocess` in its own process while a reader thread counts and
   searches the read alias throughout, recording every error and the smallest count it saw.
4. Queries: at each of `--query-sizes` indexed posts, the product's own requests timed (`--repeats` each):
   the agents' case queue, a case (the case and its posts), `triage query --summary`, the analysts' trends.

Posts for the queries and the reprocess are indexed with the cheap fake language, personal-data and understanding
steps (pipeline/testing.py) and the real routing and case writer, as `triage bench web` does: query cost depends on
the documents, not on which model labelled them. `--models fake` also runs the measured batch and reprocess with
those fakes, and the stream with the light language and personal-data steps (seconds instead of model time: a check
of the tooling, not of the product's speed).

What limits each figure: the CPU seconds of every process involved (psutil: workers or the driver, the Dask
scheduler and workers, the local servers, this benchmark's producer and reader) over the phase's wall time,
and the machine's busy cores, so other load on the machine shows too. Servers elsewhere are not measured.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import psutil
from elasticsearch import NotFoundError

from cli import generate
from cli.bench import _run as run_measured
from cli.bench_stream import MAX_RATE_POSTS, _percentile, _Poller, _wait_for, bench_config
from core.config import Settings, load_settings
from core.documents import doc_key

PREFIX = "triage-benchscale"
WARM_POSTS = 20
SEARCH_WORDS = ("Netz", "Rechnung", "refund", "outage", "kündigen", "Vertrag")
SKIPPABLE = ("batch", "stream")  # phases that need no index; the indexed phases (queries, reprocess) always run
READER_REST = 3.0  # the reprocess reader rests this many times its last read's duration (Reader)
REQUEST_TIMEOUT_S = 120.0  # the benchmark's Elasticsearch requests: a slow server shows in the figures, not as errors
QUERY_BUDGET_S = 60.0  # per query and size: fewer repeats when a query is that slow
FAILOVER_TIMEOUT_S = 120.0  # for the partitions to be consumed again and the lag to come back, and the rest
MIN_ATTRIBUTED_S = 1.0
STREAM_LIGHT_STEPS = ("language", "pii")  # `--models fake` for the stream, as tests/test_stream.py's delivery tests


# ---------------------------------------------------------------------------------------------- what limits it

class CpuMeter:
    """CPU seconds per group of processes over one phase, and the machine's busy cores.

    Groups are PIDs on this machine (psutil); `extra` adds CPU seconds measured otherwise (wait4 of a child).
    `sample()` during a phase keeps the share of a process that is killed before `stop()`.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.procs: dict[int, psutil.Process] = {}
        for pid in {pid for pids in groups.values() for pid in pids}:
            try:
                self.procs[pid] = psutil.Process(pid)
            except psutil.Error:
                pass
        self.last: dict[int, float] = {}
        self.first = {pid: self._cpu(pid) for pid in self.procs}
        self.last = dict(self.first)
        self.machine = psutil.cpu_times()
        self.started = time.monotonic()

    def _cpu(self, pid: int) -> float:
        try:
            times = self.procs[pid].cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return self.last.get(pid, 0.0)

    def sample(self) -> None:
        self.last = {pid: self._cpu(pid) for pid in self.procs}

    def stop(self, extra: Optional[dict[str, float]] = None) -> dict[str, Any]:
        self.sample()
        wall = max(time.monotonic() - self.started, 1e-6)
        used = {pid: (self.last[pid] - self.first[pid]) / wall for pid in self.procs}
        cores = {name: sum(used.get(pid, 0.0) for pid in pids) for name, pids in self.groups.items()}
        busiest = max(((name, used[pid]) for name, pids in self.groups.items() for pid in pids if pid in used),
                      key=lambda item: item[1], default=("", 0.0))
        for name, seconds in (extra or {}).items():
            cores[name] = cores.get(name, 0.0) + seconds / wall
            busiest = max(busiest, (name, seconds / wall), key=lambda item: item[1])
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self.machine.idle + getattr(self.machine, "iowait", 0.0))
        busy = (sum(now) - sum(self.machine) - idle) / wall
        return {"seconds": wall, "cores": {k: round(v, 3) for k, v in cores.items()},
                "busiest_process": {"group": busiest[0], "cores": round(busiest[1], 3)},
                "machine_busy_cores": round(busy, 3), "cpus": os.cpu_count() or 1}


def limit(cpu: dict[str, Any]) -> str:
    """A one-line verdict on what bounded a phase, from a CpuMeter reading."""
    cores, cpus, busy = cpu["cores"], cpu["cpus"], cpu["machine_busy_cores"]
    if cpu["seconds"] < MIN_ATTRIBUTED_S:  # CPU times tick in 10 ms: a shorter phase says nothing
        return f"too short to attribute ({cpu['seconds'] * 1000:.0f} ms; cores used: not measured)"
    other = max(0.0, busy - sum(cores.values()))
    used = ", ".join(f"{name} {value:.2f}" for name, value in cores.items())
    if busy >= 0.85 * cpus:
        verdict = f"machine CPU saturated ({busy:.1f} of {cpus} cores busy, {other:.1f} by other processes)"
    elif cpu["busiest_process"]["cores"] >= 0.85:
        verdict = f"one {cpu['busiest_process']['group']} process at a full core"
    else:
        verdict = f"not CPU-bound ({busy:.1f} of {cpus} cores busy): waiting on I/O or round trips"
    return f"{verdict}; cores used: {used}"


def local_servers(settings: Settings) -> list[int]:
    """PIDs of the local Kafka/Elasticsearch stand-ins serving `settings` (none when the servers are elsewhere)."""
    from core import services
    return [pid for service in services.services_for(settings.services) if (pid := service.pid())]


# ------------------------------------------------------------------------------------------------- the posts

def steps_for(models: str) -> Optional[list[Any]]:
    """The enrichment steps of a measured run: None for the configured (real) ones, else the cheap fakes."""
    if models == "real":
        return None
    from pipeline.testing import FakeLanguage, FakePii, FakeUnderstanding
    from triage.step import Route
    return [FakeLanguage, FakePii, FakeUnderstanding, Route]


def write_slice(source: Path, target: Path, start: int, stop: int) -> int:
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        out.writelines(itertools.islice(lines, start, stop))
    return stop - start


def read_slice(source: Path, start: int, stop: int) -> list[dict[str, Any]]:
    with source.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in itertools.islice(lines, start, stop)]


# -------------------------------------------------------------------------------------------------- 1. batch

def _child(settings_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cli.bench_scale", "--child", str(settings_file), *args]


def _env(settings_file: Path) -> dict[str, str]:
    return dict(os.environ, TRIAGE_CONFIG=str(settings_file), PYTHONUNBUFFERED="1")


def batch_run(settings_file: Path, source: Path, work: Path, models: str, beam_args: list[str],
              meter_groups: dict[str, list[int]], servers: list[int]) -> dict[str, Any]:
    """One `triage batch` JSONL -> JSONL in its own process; the figures and the posts written."""
    output, summary = work / "batch-out.jsonl", work / "batch-summary.json"
    spec = {"input": str(source), "output": str(output), "dead": str(work / "batch-dead.jsonl"),
            "models": models, "beam_args": beam_args, "summary": str(summary)}
    meter = CpuMeter({**meter_groups, "servers": servers})
    measured = run_measured(_child(settings_file, "batch", json.dumps(spec)), _env(settings_file))
    cpu = meter.stop({"driver": measured["cpu_s"]})
    result = json.loads(summary.read_text())
    written = sum(1 for _ in output.open(encoding="utf-8"))
    enriched = result["counters"].get("enriched", 0)
    return {"posts_in": result["counters"].get("records_in", written), "enriched": enriched, "written": written,
            "pipeline_s": result["seconds"], "wall_s": measured["wall_s"], "peak_rss_mb": measured["peak_rss_mb"],
            "posts_per_s": enriched / result["seconds"], "posts_per_s_wall": enriched / measured["wall_s"],
            "counted_from": result["counted_from"], "cpu": cpu, "limit": limit(cpu)}


def _dask_pids(address: str) -> dict[str, list[int]]:
    from distributed import Client
    with Client(address, timeout=30) as client:
        return {"dask workers": list(client.run(os.getpid).values()),
                "dask scheduler": [client.run_on_scheduler(os.getpid)]}


def measure_batch(settings: Settings, settings_file: Path, source: Path, work: Path, models: str,
                  workers: list[int]) -> list[dict[str, Any]]:
    from core import dask_cluster
    from core.services import free_port
    servers = local_servers(settings)
    rows = [{"engine": "FnApiRunner", "workers": 1,
             **batch_run(settings_file, source, work, models, [], {}, servers)}]
    print(f"  batch FnApiRunner: {rows[-1]['posts_per_s']:.0f} posts/s", file=sys.stderr)
    cluster_cfg = settings.services.model_copy(update={"data_dir": str(work / "services")})
    for count in workers:
        dask_cluster.up(cluster_cfg, count, free_port(), free_port())
        try:
            cluster = dask_cluster.recorded(cluster_cfg)
            assert cluster is not None
            groups = _dask_pids(cluster.address)
            row = batch_run(settings_file, source, work, models, cluster.beam_args().split(), groups, servers)
        finally:
            dask_cluster.down(cluster_cfg)
        rows.append({"engine": "DaskRunner", "workers": count, **row})
        print(f"  batch Dask, {count} worker(s): {row['posts_per_s']:.0f} posts/s", file=sys.stderr)
    return rows


# ------------------------------------------------------------------------------------------------- 2. stream

class StreamPhase:
    """Topics, an index and a consumer group of their own, and one `triage stream --workers N` process.

    The stream is measured as users run it (N > 1: a supervisor and N worker processes in one group). With
    `--models fake` it enriches with the product's light steps (language, personal data) instead of all four:
    the stream command cannot take the fake steps of pipeline/testing.py."""

    def __init__(self, work: Path, config: Optional[str], name: str, models: str) -> None:
        from core.clients import elasticsearch_client
        from core.kafka_writer import producer
        from core.provision import setup_all
        self.work, self.name = work / name, name
        self.work.mkdir(parents=True, exist_ok=True)
        overrides: dict[str, Any] = {
            "kafka": {"topics": {"raw": f"{name}.raw", "enriched": f"{name}.enriched", "dead_letter": f"{name}.dead",
                                 "case_updates": f"{name}.cases"}},
            "elasticsearch": {"index_prefix": name}, "stream": {"group_id": name, "metrics_port": 0},
            "logging": {"level": "INFO", "format": "json"}}
        if models == "fake":
            overrides["enrichment"] = {"steps": list(STREAM_LIGHT_STEPS)}
        self.config_file = bench_config(self.work, config, overrides)
        self.settings = load_settings(self.config_file)
        setup_all(self.settings)
        self.es = elasticsearch_client(self.settings.elasticsearch)
        self.kafka = producer(self.settings.kafka)
        self.poller = _Poller(self.es, self.settings.elasticsearch.read_alias)
        self.poller.start()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, workers: int) -> None:
        log = (self.work / "stream.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "stream", "--workers", str(workers),
                                      "--metrics-port", "0"], env=_env(self.config_file), stdout=log,
                                     stderr=subprocess.STDOUT)

    def pids(self) -> list[int]:
        """The stream's processes: the command's own and, with --workers N > 1, the workers it supervises."""
        assert self.proc is not None
        try:
            return [self.proc.pid, *(child.pid for child in psutil.Process(self.proc.pid).children(recursive=True))]
        except psutil.Error:
            return [self.proc.pid]

    def send(self, posts: Iterable[dict[str, Any]], rate: Optional[float] = None,
             stop: Optional[threading.Event] = None) -> list[str]:
        """Posts to the raw topic, as fast as possible or at `rate` a second; their document ids."""
        keys, started = [], time.monotonic()
        for post in posts:
            if stop is not None and stop.is_set():
                break
            key = doc_key(post["id"])
            with self.poller.lock:
                self.poller.sent[key] = time.monotonic()
            self.kafka.send(self.settings.kafka.topics.raw, key=post["id"].encode(),
                            value=json.dumps(post, ensure_ascii=False).encode())
            keys.append(key)
            if rate:
                time.sleep(max(0.0, started + len(keys) / rate - time.monotonic()))
        self.kafka.flush()
        return keys

    def wait(self, keys: list[str], timeout_s: float) -> None:
        try:
            _wait_for(self.poller, keys, timeout_s)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} (the stream's log: {self.work / 'stream.log'})") from None

    def settle(self, keys: list[str], timeout_s: float) -> int:
        """How many of `keys` are searchable once all are, or after `timeout_s` (a stuck group is a finding)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.poller.lock:
                found = sum(1 for key in keys if key in self.poller.seen)
            if found == len(keys) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def warm_up(self, posts: list[dict[str, Any]], workers: int, timeout_s: float = 300) -> None:
        """Until the models are loaded and `workers` members hold partitions (where the broker's group description
        can be read), so that start-up is not measured."""
        from pipeline.io.consumer_group import group_status
        self.wait(self.send([{**p, "id": f"{p['id']}-warm"} for p in posts[:WARM_POSTS]]), timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = group_status(self.settings.kafka, self.name, [self.settings.kafka.topics.raw])
            if status.note or sum(1 for m in status.members if m["partitions"]) >= workers:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{workers} stream workers did not all get partitions within {timeout_s:.0f} s")

    def close(self) -> None:
        from core.provision import teardown_all
        self.poller.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the supervisor stops its workers
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                for pid in reversed(self.pids()):
                    with contextlib.suppress(psutil.Error):
                        psutil.Process(pid).kill()
                self.proc.wait()
        self.kafka.close()
        self.es.close()
        teardown_all(self.settings)  # left behind, every phase's topics and index would slow the servers down


def measure_stream(settings: Settings, config: Optional[str], posts_file: Path, work: Path, models: str,
                   workers: int, posts: int) -> dict[str, Any]:
    """Flat-out throughput of `triage stream --workers N`, warmed up first."""
    phase = StreamPhase(work, config, f"benchscale-{os.getpid()}-flat{workers}", models)
    try:
        batch = read_slice(posts_file, 0, posts)
        phase.start(workers)
        phase.warm_up(batch, workers)
        meter = CpuMeter({"stream workers": phase.pids(), "servers": local_servers(settings),
                          "bench (producer, poller)": [os.getpid()]})
        started = time.monotonic()
        keys = phase.send(batch)
        sent_s = time.monotonic() - started
        phase.wait(keys, 900)
        cpu = meter.stop()
        with phase.poller.lock:
            drained_s = max(phase.poller.seen[k] for k in keys) - started
        return {"workers": workers, "posts": len(keys), "indexed": len(set(keys) & set(phase.poller.seen)),
                "sent_per_s": len(keys) / sent_s, "seconds": drained_s, "posts_per_s": len(keys) / drained_s,
                "cpu": cpu, "limit": limit(cpu)}
    finally:
        phase.close()


def measure_failover(settings: Settings, config: Optional[str], posts_file: Path, work: Path, models: str,
                     workers: int, rate: float, posts: int) -> dict[str, Any]:
    """One of `workers` SIGKILLed while posts arrive at `rate`: seconds until all its partitions are consumed again,
    and until the group's lag is back to the most it was in the seconds before the kill (None: not within
    FAILOVER_TIMEOUT_S); then how many of the posts sent became searchable.

    What brings them back is the supervisor's restart of the worker under the same static member id (KIP-345): a
    broker that expires the dead member would move its partitions to the others instead, but neither local broker
    does (noida-db keeps it in a group stuck rebalancing; tansu 0.6 rebalanced after the session timeout and left
    its partitions assigned to it)."""
    from pipeline.io.consumer_group import GroupWatch
    phase = StreamPhase(work, config, f"benchscale-{os.getpid()}-failover", models)
    try:
        batch = read_slice(posts_file, 0, posts)
        phase.start(workers)
        phase.warm_up(batch, workers)
        watch = GroupWatch(phase.settings.kafka, phase.name, [phase.settings.kafka.topics.raw])
        stop, sent = threading.Event(), []
        endless = ({**p, "id": f"{p['id']}-r{round_}"} for round_ in itertools.count() for p in batch)
        producing = threading.Thread(target=lambda: sent.extend(phase.send(endless, rate, stop)), daemon=True)
        moved_s = caught_up_s = None
        try:
            producing.start()
            time.sleep(2.0)  # the workers settle into the rate
            baseline = max(_lags(watch, 4.0))
            lags = watch.lags()
            at_kill, lag_at_kill = {(p.topic, p.partition): p.committed or 0 for p in lags}, sum(p.lag for p in lags)
            victim = psutil.Process(phase.pids()[-1])
            killed = time.monotonic()
            victim.kill()  # SIGKILL: no goodbye to the group, no commit
            peak = lag_at_kill
            while time.monotonic() - killed < FAILOVER_TIMEOUT_S:
                lags = watch.lags()
                total = sum(p.lag for p in lags)
                peak = max(peak, total)
                if moved_s is None and all((p.committed or 0) > at_kill[(p.topic, p.partition)] for p in lags):
                    moved_s = time.monotonic() - killed
                if moved_s is not None and total <= baseline:
                    caught_up_s = time.monotonic() - killed
                    break
                time.sleep(0.25)
        finally:
            stop.set()
            producing.join(timeout=60)
            watch.close()
        indexed = phase.settle(sent, FAILOVER_TIMEOUT_S)
        return {"broker": settings.kafka.bootstrap_servers, "workers": workers, "killed": 1, "rate_per_s": rate,
                "recovery": "supervisor restart under the same static member id", "baseline_lag": baseline,
                "lag_at_kill": lag_at_kill, "peak_lag": peak, "moved_s": moved_s, "caught_up_s": caught_up_s,
                "posts": len(sent), "indexed": indexed}
    finally:
        phase.close()


def _lags(watch: Any, seconds: float) -> Iterator[int]:
    """The group's lag sampled for `seconds`: the steady state a recovery must come back to."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        yield sum(p.lag for p in watch.lags())
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------------- 3. reprocess

class Reader(threading.Thread):
    """What a user sees during a reprocess: a count and a search of the read alias, one after the other, throughout.

    Every error is kept (type and message, no post data) and the smallest count seen: no downtime means no error
    and never fewer posts than before the alias swap. The reader rests READER_REST times as long as its last read
    took (at least 50 ms): on Elasticsearch that is a read every few tens of milliseconds, while on a server that
    needs seconds per search (the local stand-in at 50,000 documents and more) it takes a quarter of the server
    instead of all of it, which had starved the reprocess's own bulk requests into timeouts."""

    def __init__(self, es: Any, index: str) -> None:
        super().__init__(daemon=True)
        self.es, self.index = es, index
        self.reads, self.errors, self.counts, self.longest_s = 0, [], [], 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        from apps.query import QueryFilters, search
        for word in itertools.cycle(SEARCH_WORDS):
            if self.stopping.is_set():
                return
            started = time.monotonic()
            try:
                count = int(self.es.count(index=self.index)["count"])
                search(self.es, self.index, QueryFilters(text=word), size=10)
                self.counts.append(count)
                self.reads += 1
            except Exception as exc:  # each failure is a finding, and the reader goes on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            took = time.monotonic() - started
            self.longest_s = max(self.longest_s, took)
            self.stopping.wait(max(0.05, READER_REST * took))


def measure_reprocess(bench: Settings, settings_file: Path, work: Path, models: str) -> dict[str, Any]:
    from core.clients import elasticsearch_client
    cfg = bench.elasticsearch
    es = elasticsearch_client(cfg)
    try:
        es.indices.refresh(index=cfg.read_alias)
        before = int(es.count(index=cfg.read_alias)["count"])
        reader = Reader(es, cfg.read_alias)
        report_file = work / "reprocess-report.json"
        meter = CpuMeter({"servers": local_servers(bench), "bench (reader)": [os.getpid()]})
        reader.start()
        measured = run_measured(_child(settings_file, "reprocess", json.dumps(
            {"models": models, "workdir": str(work / "reprocess"), "report": str(report_file)})), _env(settings_file))
        time.sleep(0.5)  # a few reads after the swap and the catch-up
        reader.stopping.set()
        reader.join(timeout=60)
        cpu = meter.stop({"reprocess": measured["cpu_s"]})
        report = json.loads(report_file.read_text())
        es.indices.refresh(index=cfg.read_alias)
        after = int(es.count(index=cfg.read_alias)["count"])
        es.indices.delete(index=report["old_index"])  # kept by reprocess for rollback; the benchmark needs no rollback
    finally:
        es.close()
    return {"posts_before": before, "posts_after": after, "re_enriched": report["enriched"],
            "seconds": measured["wall_s"],
            "posts_per_s": report["enriched"] / measured["wall_s"], "peak_rss_mb": measured["peak_rss_mb"],
            "dead_letters": report["dead_letters"],
            "reader": {"reads": reader.reads, "errors": reader.errors, "min_count": min(reader.counts, default=None),
                       "max_count": max(reader.counts, default=None), "longest_read_s": reader.longest_s},
            "cpu": cpu, "limit": limit(cpu)}


# ------------------------------------------------------------------------------------------------ 4. queries

def product_queries(es: Any, bench: Settings) -> dict[str, Callable[[int], Any]]:
    """The product's own requests, by name; each call gets its repeat number (a different case each time)."""
    from apps import analytics, case_desk, query
    from apps.reply import ElasticsearchCases
    cfg = bench.elasticsearch
    cases = ElasticsearchCases(es, cfg)
    case_ids = [c["case_id"] for c in case_desk.queue(es, cfg, size=100)["cases"]] or [""]

    def a_case(i: int) -> Any:
        """What the case page asks: the case, then its posts, redacted and raw, by document id."""
        case = cases.case(case_ids[i % len(case_ids)]) or {}
        ids = [doc_key(entry["id"]) for entry in case.get("posts") or []]
        return ids and (es.mget(index=cfg.read_alias, ids=ids), es.mget(index=cfg.private_index, ids=ids))

    return {"agents' queue (cases)": lambda i: case_desk.queue(es, cfg),
            "a case": a_case,
            "query --summary": lambda i: query.summarize(es, cfg.read_alias, query.QueryFilters()),
            "analysts' trends": lambda i: analytics.over_time(es, cfg.read_alias, query.QueryFilters(), "sentiment")}


def measure_queries(bench: Settings, indexed: int, repeats: int) -> list[dict[str, Any]]:
    from core.clients import elasticsearch_client
    es = elasticsearch_client(bench.elasticsearch)
    rows = []
    try:
        for name, ask in product_queries(es, bench).items():
            ask(0)  # warm-up: connections, caches
            times: list[float] = []
            meter = CpuMeter({"servers": local_servers(bench), "bench (client)": [os.getpid()]})
            until = time.monotonic() + QUERY_BUDGET_S
            for i in range(repeats):
                if i >= 3 and time.monotonic() > until:
                    break
                started = time.perf_counter()
                ask(i)
                times.append(time.perf_counter() - started)
            cpu = meter.stop()
            rows.append({"size": indexed, "query": name, "n": len(times), "p50_ms": _percentile(times, 0.5) * 1000,
                         "p95_ms": _percentile(times, 0.95) * 1000, "cpu": cpu, "limit": limit(cpu)})
    finally:
        es.close()
    return rows


# ------------------------------------------------------------------------------------------------- the run

def _index(bench: Settings, posts_file: Path, work: Path, start: int, stop: int) -> dict[str, Any]:
    from cli.bench_web import index_posts
    part = work / f"index-{start}-{stop}.jsonl"
    write_slice(posts_file, part, start, stop)
    return index_posts(bench, part)


def run(settings: Settings, samples: str, n: int, batch_n: int, query_sizes: list[int], workers: list[int],
        models: str, repeats: int, workdir: str, config: Optional[str], json_path: Optional[str],
        skip: Sequence[str] = ()) -> int:
    """All phases in order, or all but those in `skip` (SKIPPABLE): a run that failed late repeats only its part."""
    work = Path(workdir) / "scale"
    work.mkdir(parents=True, exist_ok=True)
    name = f"benchscale-{os.getpid()}"
    settings_file = bench_config(work, config, {
        "elasticsearch": {"index_prefix": PREFIX, "request_timeout_s": REQUEST_TIMEOUT_S},
        "kafka": {"topics": {"raw": f"{name}.raw", "enriched": f"{name}.enriched", "dead_letter": f"{name}.dead",
                             "case_updates": f"{name}.cases"}},
        "logging": {"level": "WARNING", "format": "json"}})
    bench = load_settings(settings_file)
    total = max([n, *query_sizes])
    posts_file = work / "posts.jsonl"
    print(f"generating {total} posts -> {posts_file}", file=sys.stderr)
    with posts_file.open("w", encoding="utf-8") as out:
        generate.write(samples, generate.Options(n=total, seed=7, start=datetime.now(timezone.utc) - timedelta(days=28)),
                       out, progress=None)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "n": n, "batch_n": batch_n,
                               "models": models, "query_sizes": query_sizes, "workers": workers,
                               "skipped": sorted(skip)}
    if "batch" not in skip:
        batch_input = work / "batch-input.jsonl"
        write_slice(posts_file, batch_input, 0, batch_n)
        results["batch"] = measure_batch(settings, settings_file, batch_input, work, models, workers)
        save(results, json_path)
    if "stream" not in skip:
        measure_streams(settings, config, posts_file, work, models, workers, min(batch_n, MAX_RATE_POSTS), results)
        save(results, json_path)
    return measure_indexed(bench, settings_file, posts_file, work, n, query_sizes, models, repeats, results, json_path)


def measure_streams(settings: Settings, config: Optional[str], posts_file: Path, work: Path, models: str,
                    workers: list[int], stream_posts: int, results: dict[str, Any]) -> None:
    """Stream flat out with each worker count, then the failover with the largest."""
    results["stream"] = []
    for count in workers:
        results["stream"].append(measure_stream(settings, config, posts_file, work, models, count, stream_posts))
        print(f"  stream, {count} worker(s): {results['stream'][-1]['posts_per_s']:.0f} posts/s", file=sys.stderr)
    if max(workers) >= 2:
        one = next((r["posts_per_s"] for r in results["stream"] if r["workers"] == 1), results["stream"][0]["posts_per_s"])
        results["failover"] = measure_failover(settings, config, posts_file, work, models, max(workers),
                                               max(10.0, one / 4), stream_posts)
        print(f"  failover: partitions consumed again after {_s(results['failover']['moved_s'])}, lag back after "
              f"{_s(results['failover']['caught_up_s'])}", file=sys.stderr)


def measure_indexed(bench: Settings, settings_file: Path, posts_file: Path, work: Path, n: int,
                    query_sizes: list[int], models: str, repeats: int, results: dict[str, Any],
                    json_path: Optional[str]) -> int:
    """Index up to each size, time the queries there, reprocess at `n`; a dead server ends it with the reason."""
    from core.provision import setup_all, teardown_all
    try:  # a clean start: an interrupted run may have left its indices behind
        teardown_all(bench, kafka=False)
    except NotFoundError:
        pass  # nothing left behind
    setup_all(bench, kafka=False)
    results["queries"], results["indexing"] = [], []
    indexed = 0
    phase = "indexing"
    try:
        for level in sorted({n, *query_sizes}):
            print(f"  indexing posts {indexed}..{level}", file=sys.stderr)
            phase = f"indexing {indexed}..{level}"
            results["indexing"].append({"from": indexed, "to": level,
                                        **_index(bench, posts_file, work, indexed, level)})
            indexed = level
            save(results, json_path)
            if level in query_sizes:
                phase = f"queries at {level}"
                results["queries"] += measure_queries(bench, level, repeats)
                save(results, json_path)
            if level == n:
                phase = f"reprocess of {level}"
                results["reprocess"] = measure_reprocess(bench, settings_file, work, models)
                save(results, json_path)
    except Exception as exc:  # a server that dies (the local stand-in runs out of memory) ends the run, not the figures
        results["failed"] = f"{phase}: {type(exc).__name__}: {exc}"[-3000:]
    finally:
        with contextlib.suppress(Exception):  # the server may be gone
            teardown_all(bench, kafka=False)
    save(results, json_path)
    print(format_results(results))
    return 1 if "failed" in results else 0


def save(results: dict[str, Any], json_path: Optional[str]) -> None:
    """Every figure measured so far, written after each phase so that a run that dies later keeps them."""
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, ensure_ascii=False))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


def format_results(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"Scale benchmark, {r['date']}: reprocess {r['n']} posts, batch {r['batch_n']}, models {r['models']}, "
             f"{m['cpus']} CPUs, {m['memory_gib']} GiB, load average at start {m['load_average_1m']}"
             + (f"; skipped: {', '.join(r['skipped'])}" if r.get("skipped") else "")]
    if "batch" in r:
        lines += ["", f"{'batch (JSONL -> JSONL)':<26} {'posts':>7} {'posts/s':>8} {'wall s':>7} {'peak RSS MB':>11}  "
                      "limited by"]
    for row in r.get("batch", []):
        lines.append(f"{row['engine'] + ', ' + str(row['workers']) + ' worker(s)':<26} {row['enriched']:>7} "
                     f"{row['posts_per_s']:>8.0f} {row['wall_s']:>7.1f} {row['peak_rss_mb']:>11.0f}  {row['limit']}")
    if "stream" in r:
        lines += ["", f"{'stream, flat out':<26} {'posts':>7} {'posts/s':>8} {'s':>7}  limited by"]
    for row in r.get("stream", []):
        lines.append(f"{str(row['workers']) + ' worker(s)':<26} {row['posts']:>7} {row['posts_per_s']:>8.0f} "
                     f"{row['seconds']:>7.1f}  {row['limit']}")
    if "failover" in r:
        f = r["failover"]
        lines.append(f"failover on {f['broker']}: {f['workers']} workers at {f['rate_per_s']:.0f} posts/s, one killed "
                     f"(SIGKILL, restarted by the supervisor); all partitions consumed again after "
                     f"{_s(f['moved_s'])}, lag back to {f['baseline_lag']} after {_s(f['caught_up_s'])} "
                     f"(peak lag {f['peak_lag']}); {f['indexed']} of {f['posts']} posts indexed")
    if "reprocess" in r:
        p, reader = r["reprocess"], r["reprocess"]["reader"]
        lines += ["", f"reprocess: {p['re_enriched']} posts in {p['seconds']:.1f} s ({p['posts_per_s']:.0f} posts/s), "
                      f"peak RSS {p['peak_rss_mb']:.0f} MB; limited by {p['limit']}",
                  f"  reader on the read alias: {reader['reads']} reads, {len(reader['errors'])} errors, smallest count "
                  f"{reader['min_count']} (before: {p['posts_before']}, after: {p['posts_after']}), longest read "
                  f"{reader['longest_read_s']:.1f} s"]
    lines += ["", f"{'query':<24} {'posts':>7} {'n':>4} {'p50 ms':>8} {'p95 ms':>8}  limited by"]
    for row in r["queries"]:
        lines.append(f"{row['query']:<24} {row['size']:>7} {row['n']:>4} {row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f}  "
                     f"{row['limit']}")
    if "failed" in r:
        lines.append(f"FAILED during {r['failed']}")
    lines.append("limited by: CPU cores each group of processes used over the phase (psutil; servers only when local); "
                 "'other processes' is load on the machine outside the benchmark")
    return "\n".join(lines)


def _s(seconds: Optional[float]) -> str:
    return "never (timed out)" if seconds is None else f"{seconds:.1f} s"


# ------------------------------------------------------------------------------ the measured child processes

def _child_main(settings_file: str, role: str, *args: str) -> int:
    """A measured run in a process of its own: `batch SPEC` or `reprocess SPEC` (SPEC: JSON)."""
    from core import logs
    settings = load_settings(settings_file)
    logs.configure(settings.logging)
    spec = json.loads(args[0])
    if role == "batch":
        from pipeline.batch import BatchJob, run as run_batch
        summary = run_batch(settings, BatchJob(inputs=[spec["input"]], output=spec["output"], dead_letters=spec["dead"],
                                               beam_args=spec["beam_args"], steps=steps_for(spec["models"])))
        Path(spec["summary"]).write_text(json.dumps({"counters": summary.counters, "seconds": summary.seconds,
                                                     "counted_from": summary.counted_from}))
        return 0
    from dataclasses import asdict
    from apps import reprocess
    report = reprocess.reprocess(settings, spec["workdir"], steps=steps_for(spec["models"]))
    Path(spec["report"]).write_text(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"]:
        sys.exit("usage: triage bench scale (this module's own entry is for its measured child processes)")
    code = _child_main(*sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # like `triage stream`: exit even if a client library left a thread running
