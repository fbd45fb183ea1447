"""The live part of `triage demo`: posts flow from connectors through Kafka and the streaming job into the index.

A file replay sends sample posts at a demo pace and the webhook receiver takes two signed posts, the
way another tool would send them; `triage stream` runs as its own process, as it would in production.
The newcomer watches the count in the index grow and sees where the newest post was routed.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from connectors.run import run as run_connectors
from connectors.webhook import signed_headers
from cli.bench import read_posts
from core.clients import elasticsearch_client
from core.config import Settings
from core.documents import doc_key
from core.services import free_port

WEBHOOK_POSTS = [
    {"source": "webhook", "text": "Hallo, meine Bankverbindung hat sich geändert: DE89 3704 0044 0532 0130 00. "
                                  "Bitte ab Dezember von diesem Konto abbuchen."},
    {"source": "webhook", "text": "Ich will kündigen. Seit Wochen kein stabiles Internet und niemand meldet sich!"},
]


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


def run(settings: Settings, samples: str, workdir: Path, count: int = 60, speed: float = 4.0,
        timeout_s: float = 300.0) -> int:
    run_id = secrets.token_hex(3)
    workdir.mkdir(parents=True, exist_ok=True)
    ids = _replay_file(samples, workdir / "live-posts.jsonl", run_id, count)
    port, secret_value = free_port(), secrets.token_urlsafe(24)
    os.environ["TRIAGE_DEMO_WEBHOOK_SECRET"] = secret_value
    sources = workdir / "live-sources.yaml"
    sources.write_text(yaml.safe_dump({"checkpoint_db": str(workdir / "live-checkpoints.sqlite"), "sources": [
        {"type": "replay", "name": "demo-replay", "path": str(workdir / "live-posts.jsonl"), "speed": speed},
        {"type": "webhook", "name": "demo-webhook", "port": port, "secret_env": "TRIAGE_DEMO_WEBHOOK_SECRET"}]}))
    print(f"\nLive: starting the streaming job (`triage stream`, log in {workdir / 'stream.log'}) and the connectors: "
          f"a replay of {count} sample posts at {speed:g}x their pace and a webhook receiver on port {port}.")
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
        return 0
    finally:
        stop.set()
        connectors.join(15)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        es.close()
