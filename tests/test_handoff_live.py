"""The handoff end to end: Kafka and Elasticsearch (the conftest services, under this module's own topic and index
names), posts through the batch pipeline with the fake enrichment steps (pipeline/testing.py) and the handoff on,
`triage handoff` as a real subprocess, and the Zendesk fake (tests/fake_helpdesks.py) in this process.

One story, in order, because each step starts from what the one before left: a first batch is handed off while
the handoff process is killed with -9 and restarted; then everything is delivered again (the case updates
republished, the same posts batched again, `triage reprocess`); then the helpdesk is down for 30 s while new
cases and follow-ups come in. After each step: exactly one ticket per routed case and each customer post on it
exactly once; and no value of the raw text of a case with personal data in the posts or cases index.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from conftest import ROOT, SAMPLES, own_names
from core.config import Settings

pytestmark = pytest.mark.integration
EMAILS = ("kim.kunde@mail.example", "k.kunde+vertrag@mail.example", "jo.meier@post.example")


def _post(n: int, text: str, minutes: int, thread: str, author: str = "kim") -> dict[str, Any]:
    return {"schema_version": 1, "id": f"mastodon:{n}", "source": "mastodon", "text": text,
            "created_at": f"2026-11-23T09:{minutes:02d}:00Z", "thread_id": thread,
            "url": f"https://social.example/@{author}/{n}", "author": {"id": author, "handle": author, "name": "Kim K."}}


FIRST = [_post(1, f"Ich will kündigen! Schreibt mir an {EMAILS[0]}", 0, "mastodon:1"),
         _post(2, "Warum ist das Netz seit gestern weg?", 1, "mastodon:2", "jo")]
SECOND = [_post(3, f"Noch immer nichts, neue Adresse {EMAILS[1]}", 20, "mastodon:1"),  # a follow-up of case 1
          _post(4, f"Rechnung falsch, meldet euch: {EMAILS[2]}", 21, "mastodon:4", "jo"),
          _post(5, "Wann kommt der Techniker?", 22, "mastodon:5", "lu")]


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class World:
    def __init__(self, settings: Settings, zendesk: Any, targets: Path, tmp: Path) -> None:
        from core.clients import elasticsearch_client
        self.settings, self.zendesk, self.targets, self.tmp = settings, zendesk, targets, tmp
        self.es = elasticsearch_client(settings.elasticsearch)
        self.procs: list[subprocess.Popen[bytes]] = []

    def batch(self, posts: list[dict[str, Any]], name: str) -> None:
        from pipeline.batch import BatchJob, run
        from pipeline.testing import FAKE_STEPS
        path = self.tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in posts), encoding="utf-8")
        summary = run(self.settings, BatchJob(inputs=[str(path)], output="es", steps=list(FAKE_STEPS),
                                              dead_letters=str(self.tmp / f"{name}.dead.jsonl")))
        assert summary.count("dead_letters") == 0

    def handoff(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"handoff-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "handoff", "--targets", str(self.targets), *args],
                                cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def cases(self) -> dict[str, dict[str, Any]]:
        index = self.settings.elasticsearch.cases_read_alias
        self.es.indices.refresh(index=index)
        return {h["_id"]: h["_source"] for h in self.es.search(index=index, size=1000)["hits"]["hits"]}

    def routed(self) -> dict[str, dict[str, Any]]:
        return {cid: c for cid, c in self.cases().items() if c.get("customer_posts") and c.get("queue")}

    def handed_off(self) -> bool:
        """Every routed case's ticket recorded, with all its customer posts on it."""
        for case in self.routed().values():
            entry = (case.get("handoff") or {}).get("zd") or {}
            customers = [p["id"] for p in case["posts"] if p["role"] == "customer"]
            if entry.get("state") != "created" or entry.get("posts") != customers:
                return False
        return True

    def check_once_each(self) -> None:
        """One ticket per routed case (by external id), and on it each customer post exactly once."""
        from jsonschema import Draft202012Validator, FormatChecker

        import schemas
        from connectors.helpdesks.base import marks_post
        routed = self.routed()
        validator = Draft202012Validator(schemas.load_json("case.v1.schema.json"), format_checker=FormatChecker())
        for case in routed.values():
            validator.validate(case)  # the handoff's record fits the case schema
        tickets = self.zendesk.tickets()
        assert sorted(t["external_id"] for t in tickets) == sorted(routed)
        for ticket in tickets:
            case = routed[ticket["external_id"]]
            assert case["handoff"]["zd"]["ticket_id"] == str(ticket["id"])
            articles = self.zendesk.articles(ticket["id"])
            for post in (p for p in case["posts"] if p["role"] == "customer"):
                assert sum(marks_post(a["body"], post["id"]) for a in articles) == 1, (ticket["id"], post["id"])

    def check_no_raw_text_in_the_analysts_indices(self) -> None:
        """The e-mail addresses handed to the helpdesk (internally) are nowhere in the posts or cases index."""
        handed = json.dumps([a["body"] for t in self.zendesk.tickets() for a in self.zendesk.articles(t["id"])
                             if not a["public"]], ensure_ascii=False)
        values = [e for e in EMAILS if e in handed]
        assert values
        cfg = self.settings.elasticsearch
        for index in (cfg.read_alias, cfg.cases_read_alias):
            self.es.indices.refresh(index=index)
            dump = json.dumps(self.es.search(index=index, size=1000)["hits"]["hits"], ensure_ascii=False)
            assert [e for e in values if e in dump] == [], index

    def stop_handoffs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture(scope="module")
def world(live: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from fake_helpdesks import FakeZendesk
    tmp = tmp_path_factory.mktemp("handoff")
    with FakeZendesk() as zendesk:
        target = zendesk.target("zd", groups={"retention": "Billing", "default": "Social Media"},
                                priorities={"P1": "urgent", "P3": "normal"})
        targets = tmp / "handoff.yaml"
        targets.write_text(yaml.safe_dump({"targets": [target.model_dump(mode="json", exclude_none=True)]}))
        name = f"test-{run_id}-handoff"
        env = {"TRIAGE_ES_INDEX_PREFIX": name, "TRIAGE_KAFKA__TOPICS__RAW": f"{name}.raw",
               "TRIAGE_KAFKA__TOPICS__ENRICHED": f"{name}.enriched",
               "TRIAGE_KAFKA__TOPICS__DEAD_LETTER": f"{name}.dead", "TRIAGE_KAFKA__TOPICS__CASE_UPDATES": f"{name}.updates",
               "TRIAGE_HANDOFF__TARGETS_FILE": str(targets), "TRIAGE_HANDOFF__GROUP_ID": name,
               "TRIAGE_HANDOFF__RETRY_BACKOFF_S": "0.2", "TRIAGE_HANDOFF__MAX_BACKOFF_S": "1",
               "TRIAGE_HANDOFF__POLL_TIMEOUT_MS": "200", "TRIAGE_LOGGING__LEVEL": "INFO"}
        with own_names(env) as settings:
            world = World(settings, zendesk, targets, tmp)
            try:
                yield world
            finally:
                world.stop_handoffs()
                world.es.close()


SAMPLE_POSTS = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:40]]


def test_kill_9_mid_batch_then_restart_still_one_ticket_per_case(world: World) -> None:
    world.batch(SAMPLE_POSTS + FIRST, "first")
    routed = world.routed()
    assert len(routed) >= 20
    first = world.handoff()
    _until(lambda: len(world.zendesk.tickets()) >= 5, 60, "the first tickets")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(world.zendesk.tickets()) < len(routed), "killed too late to test anything"
    world.handoff()
    _until(world.handed_off, 90, "every routed case handed off after the restart")
    world.check_once_each()
    private = next(c for c in world.routed().values() if "mastodon:1" in [p["id"] for p in c["posts"]])
    ticket = next(t for t in world.zendesk.tickets() if t["external_id"] == private["case_id"])
    notes = [a["body"] for a in world.zendesk.articles(ticket["id"]) if not a["public"]]
    assert any(EMAILS[0] in n for n in notes)  # the raw text: only in the internal note
    assert all(EMAILS[0] not in a["body"] for a in world.zendesk.articles(ticket["id"]) if a["public"])
    assert (ticket["priority"], ticket["group_id"]) == ("urgent", 360002)  # retention P1 -> Billing, urgent
    world.check_no_raw_text_in_the_analysts_indices()


def test_redelivery_and_reprocess_create_nothing_new(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps import reprocess
    from core.kafka_writer import KafkaWriter
    from pipeline.steps import registry
    from pipeline.testing import FAKE_STEPS
    world.stop_handoffs()
    writes = len([r for r in world.zendesk.requests if r.method in ("POST", "PUT")])
    tickets = world.zendesk.tickets()
    writer = KafkaWriter(world.settings.kafka)  # every case update again
    try:
        writer.write_records(world.settings.kafka.topics.case_updates,
                             [(cid.encode(), json.dumps({"case_id": cid, "updated_at": ""}).encode())
                              for cid in world.cases()])
    finally:
        writer.close()
    world.batch(SAMPLE_POSTS + FIRST, "again")  # the same posts again: the case writer announces their cases
    monkeypatch.setattr(registry, "resolve", lambda names: list(FAKE_STEPS))
    reprocess.reprocess(world.settings, str(world.tmp / "reprocess"))
    drained = world.handoff("--once")
    assert drained.wait(timeout=120) == 0
    assert world.zendesk.tickets() == tickets
    assert len([r for r in world.zendesk.requests if r.method in ("POST", "PUT")]) == writes
    world.check_once_each()


def test_helpdesk_down_30_s_then_the_backlog_drains_without_loss_or_doubles(world: World) -> None:
    from apps.handoff_status import handoff_status
    world.zendesk.down()
    down_at = time.monotonic()
    world.handoff()
    world.batch(SECOND, "second")  # two new cases and a follow-up of the first one

    def pending() -> bool:
        world.es.indices.refresh(index=world.settings.elasticsearch.cases_read_alias)
        status = handoff_status(world.es, world.settings.elasticsearch.cases_read_alias, ["zd"])["zd"]
        return status["states"]["pending"] >= 1 and any("503" in (w["reason"] or "") for w in status["waiting"])
    _until(pending, 25, "a case pending with the helpdesk's reason")
    assert not world.handed_off()
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    world.zendesk.up()
    _until(world.handed_off, 90, "the backlog drained")
    world.check_once_each()
    follow = next(c for c in world.routed().values() if "mastodon:3" in [p["id"] for p in c["posts"]])
    assert follow["handoff"]["zd"]["posts"] == ["mastodon:1", "mastodon:3"]
    world.check_no_raw_text_in_the_analysts_indices()
    assert not any(e in json.dumps(world.cases()) for e in EMAILS)
