"""The live part of `triage demo`: posts flow from connectors through Kafka and the streaming job into the index.

A file replay sends sample posts at a demo pace and the webhook receiver takes two signed posts, the
way another tool would send them; `triage stream` runs as its own process, as it would in production.
The newcomer watches the count in the index grow and sees where the newest post was routed.

Then one conversation closes the loop: a customer writes on a Mastodon server the demo fakes (the documented
timeline and context answers, read by the real Mastodon connector), the case appears, the brand account
(named in the demo's sources config as `brand_accounts`) replies in the thread as an agent would in any tool,
and the case is answered from what the connector saw on the channel, with its first-response time.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from connectors.run import run as run_connectors
from connectors.webhook import signed_headers
from cli.bench import read_posts
from core.clients import elasticsearch_client
from core.config import Settings
from core.documents import doc_key
from core.services import free_port
from core.timestamps import utc_now

WEBHOOK_POSTS = [
    {"source": "webhook", "text": "Hallo, meine Bankverbindung hat sich geändert: DE89 3704 0044 0532 0130 00. "
                                  "Bitte ab Dezember von diesem Konto abbuchen."},
    {"source": "webhook", "text": "Ich will kündigen. Seit Wochen kein stabiles Internet und niemand meldet sich!"},
]
TAG, BRAND = "telcohilfe", "TelcoHilfe"
CUSTOMER = {"id": "90001", "username": "kunde_demo", "acct": "kunde_demo@social.example", "display_name": "Kunde",
            "followers_count": 12}
BRAND_ACCOUNT = {"id": "90002", "username": BRAND, "acct": BRAND, "display_name": "Telco hilft", "followers_count": 5400}
QUESTION = "Seit heute Morgen kein Internet, der Router blinkt rot. Könnt ihr helfen? #TelcoHilfe"
ANSWER = ("Das tut uns leid! Im Gebiet ist eine Störung bekannt, die Technik ist dran und meldet sich hier, "
          "sobald es wieder läuft. #TelcoHilfe")


class FakeMastodon:
    """The demo's channel: a Mastodon hashtag timeline (newest first) and each status's context, in the shapes the
    Mastodon API documents, so the real connector reads the customer's post and, later, the brand's reply."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                body = channel.answer(urlsplit(self.path).path)
                data = json.dumps(body).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # quiet: the demo prints what matters
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-mastodon").start()

    def publish(self, account: dict[str, Any], text: str, reply_to: Optional[str] = None) -> dict[str, Any]:
        """A new public status, now; ids grow with time as on a real server (and across demo runs)."""
        status = {"id": str(time.time_ns() // 1000), "created_at": utc_now(), "in_reply_to_id": reply_to,
                  "visibility": "public", "language": "de", "content": f"<p>{text}</p>", "spoiler_text": "",
                  "url": None, "reblog": None, "edited_at": None, "media_attachments": [], "account": account,
                  "tags": [{"name": tag.lower()} for tag in re.findall(r"#(\w+)", text)]}
        status["url"] = f"{self.url}/@{account['username']}/{status['id']}"
        with self.lock:
            self.statuses.append(status)
        return status

    def answer(self, path: str) -> Any:
        with self.lock:
            statuses = {s["id"]: s for s in self.statuses}
        if path == f"/api/v1/timelines/tag/{TAG}":
            return sorted(statuses.values(), key=lambda s: int(s["id"]), reverse=True)
        if path == "/api/v1/accounts/lookup":  # the brand account, whose own timeline the connector reads too
            return BRAND_ACCOUNT
        if path == f"/api/v1/accounts/{BRAND_ACCOUNT['id']}/statuses":
            own = [s for s in statuses.values() if s["account"]["id"] == BRAND_ACCOUNT["id"]]
            return sorted(own, key=lambda s: int(s["id"]), reverse=True)
        context = re.fullmatch(r"/api/v1/statuses/(\d+)/context", path)
        if not context or context.group(1) not in statuses:
            return None
        ancestors, parent = [], statuses[context.group(1)]["in_reply_to_id"]
        while parent in statuses:
            ancestors.insert(0, statuses[parent])
            parent = statuses[parent]["in_reply_to_id"]
        return {"ancestors": ancestors, "descendants": []}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _replay_file(samples: str, path: Path, run_id: str, count: int) -> list[str]:
    """Sample posts under new ids (so they add to the index), one recorded second apart."""
    posts = read_posts(samples)[:count]
    with path.open("w", encoding="utf-8") as out:
        for i, post in enumerate(posts):
            live = {**post, "id": f"{post['id']}-live{run_id}", "created_at": f"2026-11-22T09:{i // 60:02d}:{i % 60:02d}Z"}
            out.write(json.dumps(live, ensure_ascii=False) + "\n")
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def _send_webhook(port: int, secret: str, run_id: str) -> list[str]:
    posts = [{**p, "id": f"webhook:demo-{run_id}-{i}"} for i, p in enumerate(WEBHOOK_POSTS)]
    body = json.dumps(posts).encode()
    for _ in range(50):  # the receiver thread may still be starting
        request = urllib.request.Request(f"http://127.0.0.1:{port}/posts", body, method="POST", headers={
            "Content-Type": "application/json", **signed_headers(secret, body)})  # signed afresh per try
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                if answer.status == 202:
                    return [p["id"] for p in posts]
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the webhook receiver did not accept the demo posts")


def _indexed(es: Any, alias: str, ids: list[str]) -> tuple[int, dict[str, Any] | None]:
    """How many of `ids` are searchable, and the newest of them (redacted document, keyed by doc_key)."""
    es.indices.refresh(index=alias)
    answer = es.search(index=alias, query={"ids": {"values": [doc_key(i) for i in ids]}}, size=1, track_total_hits=True,
                       sort=[{"processed_at": {"order": "desc", "unmapped_type": "date"}}])
    hits = answer["hits"]["hits"]
    return answer["hits"]["total"]["value"], (hits[0]["_source"] if hits else None)


def _case_of(es: Any, alias: str, post_id: str) -> Optional[dict[str, Any]]:
    """The case holding a post, or None while there is none yet."""
    answer = es.search(index=alias, size=1, query={"term": {"posts.id": post_id}})
    hits = answer["hits"]["hits"]
    return hits[0]["_source"] if hits else None


def _wait_for_case(es: Any, alias: str, post_id: str, answered: bool, deadline: float, log: Path) -> dict[str, Any]:
    while True:
        es.indices.refresh(index=alias)
        case = _case_of(es, alias, post_id)
        if case and (case.get("answered_at") is not None) == answered:
            return case
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {'answered ' if answered else ''}case for the demo's Mastodon post in time; see {log}")
        time.sleep(1)


def _conversation(es: Any, settings: Settings, channel: FakeMastodon, question: dict[str, Any], started: float,
                  log: Path, timeout_s: float) -> None:
    """From the customer's post to the brand's answer seen on the channel, as the cases index tells it."""
    alias, deadline = settings.elasticsearch.cases_read_alias, time.monotonic() + timeout_s
    post_id = f"mastodon:{urlsplit(channel.url).netloc}:{question['id']}"
    case = _wait_for_case(es, alias, post_id, False, deadline, log)
    print(f"  {time.monotonic() - started:5.0f} s  case {case['case_id']}: a customer asked on Mastodon at "
          f"{case['first_post_at'][11:19]} -> queue {case.get('queue')}, {case.get('priority')}, status {case['status']}, "
          f"due {str(case.get('due_at'))[11:19]}")
    channel.publish(BRAND_ACCOUNT, ANSWER, reply_to=question["id"])
    print(f"  {time.monotonic() - started:5.0f} s  the brand account @{BRAND} replied in the thread (as an agent would, "
          "in any tool)")
    case = _wait_for_case(es, alias, post_id, True, deadline, log)
    within = {True: "yes", False: "no", None: "no due time"}[case.get("within_sla")]
    print(f"  {time.monotonic() - started:5.0f} s  case {case['case_id']}: {case['status']}, answered by "
          f"{case.get('answered_by')} via {case.get('answered_via')} at {str(case.get('answered_at'))[11:19]}, "
          f"seen on the channel: first response {case.get('first_response_seconds'):.0f} s, within SLA: {within}")


def run(settings: Settings, samples: str, workdir: Path, count: int = 60, speed: float = 4.0,
        timeout_s: float = 300.0) -> int:
    run_id = secrets.token_hex(3)
    workdir.mkdir(parents=True, exist_ok=True)
    ids = _replay_file(samples, workdir / "live-posts.jsonl", run_id, count)
    port, secret_value = free_port(), secrets.token_urlsafe(24)
    os.environ["TRIAGE_DEMO_WEBHOOK_SECRET"] = secret_value
    channel = FakeMastodon()
    question = channel.publish(CUSTOMER, QUESTION)
    sources = workdir / "live-sources.yaml"
    sources.write_text(yaml.safe_dump({"checkpoint_db": str(workdir / "live-checkpoints.sqlite"), "sources": [
        {"type": "replay", "name": "demo-replay", "path": str(workdir / "live-posts.jsonl"), "speed": speed},
        {"type": "webhook", "name": "demo-webhook", "port": port, "secret_env": "TRIAGE_DEMO_WEBHOOK_SECRET"},
        {"type": "mastodon", "name": "demo-mastodon", "url": channel.url, "hashtags": [TAG], "every_s": 1.0,
         "brand_accounts": [f"@{BRAND}"]}]}))
    print(f"\nLive: starting the streaming job (`triage stream`, log in {workdir / 'stream.log'}) and the connectors: "
          f"a replay of {count} sample posts at {speed:g}x their pace, a webhook receiver on port {port}, and a "
          f"Mastodon hashtag (#{TAG}) on a demo server where a customer has just asked for help.")
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "stream", "--metrics-port", "0"],
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "stream.log", "wb"))
    stop = threading.Event()
    connectors = threading.Thread(target=run_connectors, args=(settings, str(sources)), kwargs={"stop": stop},
                                  daemon=True, name="connectors")
    connectors.start()
    es = elasticsearch_client(settings.elasticsearch)
    started, shown = time.monotonic(), -1
    try:
        ids += _send_webhook(port, secret_value, run_id)
        print("  webhook: 2 signed posts accepted (one with bank details, one cancellation)")
        while True:
            done, newest = _indexed(es, settings.elasticsearch.read_alias, ids)
            if done != shown:
                line = f"  {time.monotonic() - started:5.0f} s  {done:3d} of {len(ids)} posts in the index"
                if newest:
                    triage = newest.get("triage") or {}
                    line += (f"   newest -> queue {triage.get('queue')}, {triage.get('priority')}: "
                             f"{(newest.get('text_redacted') or '')[:60]!r}")
                print(line, flush=True)
                shown = done
            if done == len(ids):
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the streaming job stopped (exit {worker.returncode}); see {workdir / 'stream.log'}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"only {done} of {len(ids)} posts indexed after {timeout_s:.0f} s; "
                                   f"see {workdir / 'stream.log'}")
            time.sleep(2)
        print(f"Live: {len(ids)} posts went connectors -> Kafka -> stream job -> Elasticsearch in "
              f"{time.monotonic() - started:.0f} s (the stream job's model load included).")
        print("\nLive: one conversation, from the customer's post to the brand's answer seen on the channel.")
        _conversation(es, settings, channel, question, started, workdir / "stream.log", timeout_s)
        return 0
    finally:
        stop.set()
        connectors.join(15)
        channel.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        es.close()
