"""`triage bench web`: how fast the web workspace answers with N posts in the index, and where the time goes.

N posts from `triage generate` (threads, brand answers, repeat authors, spread over the four weeks up to now so
due times are realistic) are indexed by `triage batch`'s pipeline with the cheap fake language, personal-data and
understanding steps of pipeline/testing.py and the real routing rules, so queues, priorities and due times are the
product's and the cases index is maintained by the product's case writer: minutes instead of an hour of models.
They go to indices of their own (prefix `triage-benchweb`, removed at the end), never the real ones.

Then `triage web` is started as its own process, an agent, an analyst and a supervisor log in, and each page is requested
`--requests` times (fewer when they take over three minutes together), one request at a time: the queue page, case
pages (a different case each time), /api/queue, /api/search and the supervisor page. Between the web process and Elasticsearch sits a pass-through proxy
(`EsTimer`) that adds up, per page request, the time spent waiting on Elasticsearch and the `took` Elasticsearch
reports for its searches; the rest of a page's time is the workspace's own (Python, templates, HTTP). That says
what dominates without changing the product.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import requests
from elasticsearch import NotFoundError

from cli import generate
from cli.bench_stream import _percentile
from core.config import Settings
from core.provision import setup_all, teardown_all
from core.redact import redact_url

PREFIX = "triage-benchweb"
ROLES = ("agent", "analyst", "supervisor")
SEARCH_WORDS = ("Netz", "Rechnung", "refund", "outage", "kündigen", "Vertrag", "app", "Glasfaser")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"})


class EsTimer:
    """A pass-through HTTP proxy in front of Elasticsearch that adds up the time spent waiting on it.

    `calls`, `seconds` (round trips as the web process sees them, minus this hop) and `took_ms` (what
    Elasticsearch reports for its searches) since the last `reset()`. The benchmark sends one page request at a
    time, so the figures after a request belong to that request.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 9200
        self.lock = threading.Lock()
        self.reset()
        timer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                timer.forward(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._local = threading.local()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.calls, self.seconds, self.took_ms = 0, 0.0, 0

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        if fresh or getattr(self._local, "conn", None) is None:
            self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return self._local.conn

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        started = time.perf_counter()
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed meanwhile
            conn = self._upstream(fresh=attempt == 1)
            try:
                conn.request(handler.command, handler.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                if attempt:
                    raise
        elapsed = time.perf_counter() - started
        with self.lock:
            self.calls += 1
            self.seconds += elapsed
            self.took_ms += _took(data)
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                handler.send_header(name, value)
        length = response.getheader("Content-Length") if handler.command == "HEAD" else str(len(data))
        handler.send_header("Content-Length", length or "0")
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _took(data: bytes) -> int:
    """Elasticsearch's own time (`took`, ms) of a search or multi-search answer; 0 for other answers."""
    if b'"took"' not in data[:200]:
        return 0
    try:
        took = json.loads(data).get("took")
    except (ValueError, AttributeError):
        return 0
    return took if isinstance(took, int) else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def index_posts(settings: Settings, path: Path) -> dict[str, Any]:
    """Posts of a JSONL file into the indices of `settings` with fake enrichment and the real routing and case writer,
    searchable when this returns (Elasticsearch shows writes only after a refresh)."""
    from pipeline.batch import BatchJob, run
    from pipeline.testing import FakeLanguage, FakePii, FakeUnderstanding
    from triage.step import Route
    summary = run(settings, BatchJob(inputs=[str(path)], output="es",
                                     dead_letters=str(path.with_suffix(".dead-letters.jsonl")),
                                     steps=[FakeLanguage, FakePii, FakeUnderstanding, Route]))
    refresh(settings)
    return {"seconds": summary.seconds, **summary.counters}


def refresh(settings: Settings) -> None:
    """Make the posts and cases written so far searchable."""
    from core.clients import elasticsearch_client
    cfg = settings.elasticsearch
    es = elasticsearch_client(cfg)
    try:
        es.indices.refresh(index=f"{cfg.read_alias},{cfg.cases_read_alias}")
    finally:
        es.close()


class WebServer:
    """`triage web` as its own process on a free port, ready once its login page answers; `close()` stops it.

    `web_args` follow `triage web` (--users, --sources ...); `env` is its whole environment; its output goes to `log`.
    The benchmark and the browser tests (tests/browser.py) start it the same way.
    """

    def __init__(self, web_args: list[str], env: dict[str, str], log: Path, config: Optional[str] = None,
                 timeout_s: float = 90) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "cli.main", *(["--config", config] if config else []), "web",
                "--host", "127.0.0.1", "--port", str(self.port), *web_args]
        self.log_path = log
        self.log = log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"triage web exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/login", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.3)
        self.close()
        raise RuntimeError(f"triage web did not answer within {timeout_s:.0f} s; see {log}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def login(base: str, name: str, password: str) -> requests.Session:
    """A session logged in through the login form (its CSRF token included), as a browser would."""
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=30)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"', page.text)
    if not token:
        raise RuntimeError("the login page has no csrf_token field")
    answer = session.post(f"{base}/login", data={"username": name, "password": password,
                                                  "csrf_token": token.group(1) or token.group(2)},
                          timeout=30, allow_redirects=False)  # the home page it leads to is timed later
    if answer.status_code not in (302, 303) or "/login" in answer.headers.get("Location", "/login"):
        raise RuntimeError(f"login as {name} failed (HTTP {answer.status_code})")
    return session


def case_ids(session: requests.Session, base: str) -> list[str]:
    listed = session.get(f"{base}/api/queue", timeout=120).json()
    rows = listed if isinstance(listed, list) else listed.get("cases", [])
    return [row["case_id"] for row in rows if row.get("case_id")]


def time_requests(session: requests.Session, urls: Callable[[int], str], count: int, es: EsTimer,
                  budget_s: float) -> dict[str, Any]:
    """`count` GETs one after the other (fewer when they take longer than `budget_s` together): per request the wall
    time, the time waiting on Elasticsearch, its took."""
    wall, in_es, took, calls = [], [], [], []
    until = time.monotonic() + budget_s
    for i in range(count):
        if i >= 5 and time.monotonic() > until:
            break
        es.reset()
        started = time.perf_counter()
        answer = session.get(urls(i), timeout=300)
        wall.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {urls(i)} answered HTTP {answer.status_code}")
        with es.lock:
            in_es.append(es.seconds)
            took.append(es.took_ms / 1000)
            calls.append(es.calls)
    return {"wall": wall, "es": in_es, "took": took, "calls": calls}


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def format_results(rows: dict[str, dict[str, Any]]) -> str:
    """A row per page; the `took` column only when Elasticsearch reports one (the local stand-in says 0)."""
    with_took = any(any(r["took"]) for r in rows.values())
    lines = [f"{'page':<18} {'n':>4} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'ES calls':>8} {'in ES p50':>9} "
             f"{'in ES p95':>9} {'ES share':>8}" + (f" {'ES took p50':>11}" if with_took else "")]
    for name, r in rows.items():
        share = sum(r["es"]) / sum(r["wall"]) if sum(r["wall"]) else 0.0
        lines.append(f"{name:<18} {len(r['wall']):>4} {_ms(_percentile(r['wall'], 0.5)):>7} "
                     f"{_ms(_percentile(r['wall'], 0.95)):>7} {_ms(max(r['wall'])):>7} "
                     f"{sum(r['calls']) / len(r['calls']):>8.1f} {_ms(_percentile(r['es'], 0.5)):>9} "
                     f"{_ms(_percentile(r['es'], 0.95)):>9} {share:>8.0%}"
                     + (f" {_ms(_percentile(r['took'], 0.5)):>11}" if with_took else ""))
    return "\n".join(lines)


def run(settings: Settings, samples: str, n: int, count: int, workdir: str, config: Optional[str],
        budget_s: float = 180) -> int:
    from apps.web.users import add_user
    work = Path(workdir) / "web"
    work.mkdir(parents=True, exist_ok=True)
    bench = settings.model_copy(update={"elasticsearch": settings.elasticsearch.model_copy(
        update={"index_prefix": PREFIX})})
    try:  # a clean start: a re-run must not find the cases of the previous one
        teardown_all(bench, kafka=False)
    except NotFoundError:
        pass  # no earlier run
    setup_all(bench, kafka=False)
    posts = work / "posts.jsonl"
    print(f"generating {n} posts -> {posts}", file=sys.stderr)
    with posts.open("w", encoding="utf-8") as out:
        start = datetime.now(timezone.utc) - timedelta(days=28)  # due times around now, as in a working queue
        generate.write(samples, generate.Options(n=n, seed=7, start=start), out)
    print(f"indexing them into {PREFIX}-* (fake language/PII/understanding, real routing and cases)", file=sys.stderr)
    indexed = index_posts(bench, posts)
    password = secrets.token_urlsafe(16)
    users = work / "users.yaml"
    for role in ROLES:
        add_user(users, f"bench-{role}", role, password)
    es = EsTimer(settings.elasticsearch.url)
    env = dict(os.environ, TRIAGE_ES_INDEX_PREFIX=PREFIX, TRIAGE_ES_URL=es.url, TRIAGE_WEB__INSECURE_COOKIES="true",
               TRIAGE_WEB__AUDIT_LOG=str(work / "audit.jsonl"), TRIAGE_LOGGING__LEVEL="WARNING")
    server = WebServer(["--users", str(users)], env, work / "web.log", config)
    try:
        agent, analyst, supervisor = (login(server.url, f"bench-{role}", password) for role in ROLES)
        cases = case_ids(agent, server.url)
        if not cases:
            raise RuntimeError("the queue is empty: no open case was indexed")
        base = server.url
        plan: dict[str, tuple[requests.Session, Callable[[int], str]]] = {
            "queue page": (agent, lambda i: f"{base}/queue"),
            "case page": (agent, lambda i: f"{base}/cases/{cases[i % len(cases)]}"),
            "/api/queue": (agent, lambda i: f"{base}/api/queue"),
            "/api/search": (analyst, lambda i: f"{base}/api/search?q={SEARCH_WORDS[i % len(SEARCH_WORDS)]}"),
            "supervisor page": (supervisor, lambda i: f"{base}/supervisor"),
        }
        rows = {}
        for name, (session, urls) in plan.items():
            session.get(urls(0), timeout=300)  # warm-up: first-use costs (template compile, connections)
            rows[name] = time_requests(session, urls, count, es, budget_s)
            print(f"  {name}: done", file=sys.stderr)
    finally:
        server.close()
        es.close()
        teardown_all(bench, kafka=False)
    print(f"Web workspace benchmark, {time.strftime('%Y-%m-%d')}: {n} posts ({indexed.get('enriched', 0)} indexed in "
          f"{indexed['seconds']:.0f} s, {indexed.get('cases_updated', 0)} case writes), {len(cases)} cases in the "
          f"agent's queue page, up to {count} requests per page one at a time (at most {budget_s:.0f} s a page), "
          f"{os.cpu_count()} CPUs, Elasticsearch "
          f"{redact_url(settings.elasticsearch.url)}")
    print(format_results(rows))
    print("in ES: time the web process waited on Elasticsearch per request (HTTP round trips); ES share: of all the "
          "page's time; the rest is the workspace's own (Python, templates, HTTP). ES took: Elasticsearch's own search "
          "time, where it reports one.")
    (work / "results.json").write_text(json.dumps({"posts": n, "indexed": indexed, "requests": count, "rows": rows}))
    return 0
