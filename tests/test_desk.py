"""The agents' work surface end to end on the local services: queues, claims, answers, relabels,
reprocessing with an alias swap, and an analyst index free of personal data.

Runs on its own index prefix, because reprocessing moves the aliases of the index it works on.
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, SAMPLES, own_names
from core.documents import doc_key
from apps import desk
from cli.main import main
from core.clients import elasticsearch_client
from core.config import Settings
from triage.routing import PRIORITIES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def desk_settings(live: Settings, run_id: str) -> Iterator[Settings]:
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-desk"}, kafka=False) as settings:
        assert main(["batch", "--input", str(SAMPLES), "--output", "es"]) == 0
        yield settings


@pytest.fixture(scope="module")
def es_desk(desk_settings: Settings):  # type: ignore[no-untyped-def]
    client = elasticsearch_client(desk_settings.elasticsearch)
    client.indices.refresh(index=desk_settings.elasticsearch.read_alias)
    yield client
    client.close()


def _cli_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_queues_hold_every_post_with_the_routing_of_the_batch_output(
        desk_settings: Settings, es_desk, enriched_samples: list[dict]) -> None:
    cfg = desk_settings.elasticsearch
    indexed = {h["_id"]: h["_source"] for h in es_desk.search(index=cfg.read_alias, size=1000)["hits"]["hits"]}
    assert len(indexed) == len(enriched_samples)
    for post in enriched_samples:
        assert indexed[doc_key(post["id"])]["triage"] == post["triage"], post["id"]
        assert indexed[doc_key(post["id"])]["agent"]["status"] == "new"
        triage = post["triage"]
        if triage["queue"] == "spam":
            assert triage["due_at"] is None
        else:
            assert triage["due_at"] > post["created_at"].replace("+00:00", "Z")[:19]
        if post["pii"]["found"]:
            assert triage["private_channel"] and triage["suggested_reply"]
            assert triage["reasons"][-1].startswith("personal data in the post")
        if {"iban", "card_number"} & set(post["pii"]["types"]):
            assert triage["priority"] == "P1"
        if post["intent"]["label"] == "cancellation":
            assert (triage["queue"], triage["priority"]) == ("retention", "P1")
    queues = Counter(p["triage"]["queue"] for p in enriched_samples)
    assert {"retention", "technical", "billing", "social"} <= set(queues)


def test_the_queue_lists_open_posts_by_priority_then_deadline(desk_settings: Settings, es_desk,
                                                              capsys: pytest.CaptureFixture) -> None:
    listed = _cli_json(capsys, "queue", "--size", "400")
    keys = [(PRIORITIES.index(p["triage"]["priority"]), p["triage"]["due_at"] or "9999") for p in listed["posts"]]
    assert keys == sorted(keys)
    assert all("text" in p for p in listed["posts"])  # agents see the raw text to answer it
    billing = _cli_json(capsys, "queue", "--queue", "billing", "--size", "400")
    assert billing["total"] > 0 and {p["triage"]["queue"] for p in billing["posts"]} == {"billing"}


def _first_open(settings: Settings, queue: str) -> str:
    es = elasticsearch_client(settings.elasticsearch)
    try:
        return desk.queue(es, settings.elasticsearch, queue, statuses=("new",), size=1)["posts"][0]["id"]
    finally:
        es.close()


def test_two_agents_cannot_claim_the_same_post(desk_settings: Settings, capsys: pytest.CaptureFixture) -> None:
    post_id = _first_open(desk_settings, "technical")
    assert main(["claim", post_id, "--agent", "alice"]) == 0
    capsys.readouterr()
    assert main(["claim", post_id, "--agent", "bob"]) == 1
    assert "claimed by alice" in capsys.readouterr().err

    contested = _first_open(desk_settings, "social")
    cfg = desk_settings.elasticsearch
    outcomes: list[str] = []

    def grab(agent: str) -> None:
        es = elasticsearch_client(cfg)
        try:
            desk.claim(es, cfg, contested, agent)
            outcomes.append(agent)
        except desk.DeskError:
            outcomes.append("refused")
        finally:
            es.close()

    threads = [threading.Thread(target=grab, args=(f"agent-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("refused") == 3
    es = elasticsearch_client(cfg)
    winner = es.get(index=cfg.read_alias, id=doc_key(contested))["_source"]["agent"]["assignee"]
    es.close()
    assert [o for o in outcomes if o != "refused"] == [winner]


def test_answer_relabel_export_and_reprocess_keep_the_agents_work(
        desk_settings: Settings, es_desk, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    cfg = desk_settings.elasticsearch
    post_id = _first_open(desk_settings, "retention")
    assert main(["claim", post_id, "--agent", "carla"]) == 0
    assert main(["answer", post_id, "--agent", "carla", "--note", "Per DM geklärt"]) == 0
    assert main(["relabel", post_id, "--agent", "carla", "--intent", "complaint", "--sentiment", "negative"]) == 0
    capsys.readouterr()
    assert main(["relabel", post_id, "--intent", "angry"]) == 1
    assert "unknown intent" in capsys.readouterr().err
    before = es_desk.get(index=cfg.read_alias, id=doc_key(post_id))["_source"]["agent"]
    assert (before["status"], before["assignee"], before["corrected"]["intent"]) == ("answered", "carla", "complaint")
    assert before["within_sla"] is False  # the sample posts are days old: every deadline has passed

    labels = tmp_path / "labels.jsonl"
    assert main(["export-labels", "--out", str(labels)]) == 0
    rows = [json.loads(line) for line in labels.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["label"], r["sentiment"]) for r in rows] == [(doc_key(post_id), "complaint", "negative")]

    # A post whose raw document is gone cannot be re-enriched: it must still survive.
    orphan = _first_open(desk_settings, "social")
    es_desk.delete(index=cfg.private_index, id=doc_key(orphan), refresh=True)
    total = es_desk.count(index=cfg.read_alias)["count"]

    capsys.readouterr()
    assert main(["reprocess", "--workdir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "-000001 -> " in report and "agents' fields carried over: " in report
    aliases = es_desk.indices.get_alias(name=f"{cfg.read_alias},{cfg.write_alias}").body
    assert set(aliases) == {f"{cfg.index_prefix}-000002"}
    es_desk.indices.refresh(index=cfg.read_alias)
    assert es_desk.count(index=cfg.read_alias)["count"] == total
    after = es_desk.get(index=cfg.read_alias, id=doc_key(post_id))
    assert after["_index"].endswith("-000002")
    assert after["_source"]["agent"] == before
    assert es_desk.exists(index=cfg.read_alias, id=doc_key(orphan))
    notes = es_desk.get(index=cfg.private_index, id=doc_key(post_id))["_source"]["agent_notes"]
    assert [n["text"] for n in notes] == ["Per DM geklärt"]
    assert main(["export-labels", "--out", str(labels)]) == 0
    assert len(labels.read_text(encoding="utf-8").splitlines()) == 1


def test_no_personal_data_from_the_held_out_pii_set_reaches_the_posts_index(
        desk_settings: Settings, es_desk, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (ROOT / "data" / "eval" / "pii.jsonl").read_text(encoding="utf-8").splitlines()]
    posts = tmp_path / "pii-posts.jsonl"
    posts.write_text("".join(json.dumps({"id": f"pii-eval:{i}", "source": "review", "text": row["text"],
                                         "title": row["text"][:60]}, ensure_ascii=False) + "\n"
                             for i, row in enumerate(rows)), encoding="utf-8")
    assert main(["batch", "--input", str(posts), "--output", "es"]) == 0
    cfg = desk_settings.elasticsearch
    es_desk.indices.refresh(index=f"{cfg.read_alias},{cfg.private_index}")
    values = {row["text"][s["start"]:s["end"]] for row in rows for s in row["spans"]}
    query = {"prefix": {"id": "pii-eval:"}}
    keys = [doc_key(f"pii-eval:{i}") for i in range(len(rows))]
    analyst = es_desk.search(index=cfg.read_alias, query={"terms": {"id": keys}}, size=1000)["hits"]["hits"]
    assert len(analyst) == len(rows)
    stored = "\n".join(json.dumps(hit["_source"], ensure_ascii=False) for hit in analyst)
    assert [v for v in values if v in stored] == []
    private = es_desk.search(index=cfg.private_index, query=query, size=1000)["hits"]["hits"]
    raw = "\n".join(json.dumps(hit["_source"], ensure_ascii=False) for hit in private)
    assert all(v in raw for v in values)  # the check above is not vacuous: the values exist, privately
