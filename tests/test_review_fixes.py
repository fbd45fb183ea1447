"""Regressions from review: the stream benchmark's config merge, full-text search on titles, one timestamp
format, one definition of the open statuses, a hub-model check that survives `python -O`, and the
`triage connect` help naming every source type."""
from __future__ import annotations

import ast
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import schemas
from conftest import ROOT, own_names
from core.config import Settings, load_settings

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# 1. cli/bench_stream.py: the user's config merged key by key

USER_CONFIG = {"kafka": {"bootstrap_servers": "kafka.example:9093", "security_protocol": "SSL",
                         "topics": {"raw": "theirs.raw"}},
               "elasticsearch": {"url": "https://es.example:9200"}}
BENCH_OVERRIDES = {"kafka": {"topics": {"raw": "bench1.raw", "enriched": "bench1.enriched", "dead_letter": "bench1.dead"}},
                   "elasticsearch": {"index_prefix": "bench1"}, "stream": {"group_id": "bench1", "metrics_port": 0}}


def _bench_settings(tmp_path: Path, config: str | None) -> Settings:
    from cli.bench_stream import bench_config
    path = bench_config(tmp_path, config, BENCH_OVERRIDES)
    return load_settings(path, environ={})


@pytest.mark.parametrize("given_as", ["--config", "TRIAGE_CONFIG"])
def test_the_stream_benchmark_keeps_the_users_kafka_and_elasticsearch_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_as: str) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump(USER_CONFIG))
    if given_as == "TRIAGE_CONFIG":
        monkeypatch.setenv("TRIAGE_CONFIG", str(user))
    else:
        monkeypatch.delenv("TRIAGE_CONFIG", raising=False)
    settings = _bench_settings(tmp_path, str(user) if given_as == "--config" else None)
    assert settings.kafka.bootstrap_servers == "kafka.example:9093"
    assert settings.kafka.security_protocol == "SSL"
    assert settings.elasticsearch.url == "https://es.example:9200"
    assert (settings.kafka.topics.raw, settings.kafka.topics.enriched) == ("bench1.raw", "bench1.enriched")
    assert (settings.elasticsearch.index_prefix, settings.stream.group_id) == ("bench1", "bench1")


# 2. apps/query.py: the fields searched are the index's own, the redacted title among them

def _mapped_text_fields() -> set[str]:
    template = schemas.load_json(ROOT / "schemas" / "elasticsearch" / "posts.index-template.json")
    fields = set()
    for name, spec in template["template"]["mappings"]["properties"].items():
        if spec.get("type") == "text":
            fields.add(name)
            fields.update(f"{name}.{sub}" for sub in spec.get("fields", {}))
    return fields


def test_query_searches_only_mapped_fields_and_the_redacted_title() -> None:
    from apps.query import QueryFilters, build_query
    fields = build_query(QueryFilters(text="Router"))["bool"]["must"][0]["simple_query_string"]["fields"]
    assert set(fields) <= _mapped_text_fields()
    assert {"text_redacted", "text_redacted.de", "text_redacted.en",
            "title_redacted", "title_redacted.de", "title_redacted.en"} <= set(fields)


# 3. one timestamp format

def test_the_timestamp_helper_writes_rfc3339_utc_with_milliseconds() -> None:
    from core.timestamps import utc_iso, utc_now
    berlin = timezone(timedelta(hours=1))
    assert utc_iso(datetime(2026, 11, 3, 10, 0, tzinfo=berlin)) == "2026-11-03T09:00:00.000Z"
    assert utc_iso(datetime(2026, 11, 3, 9, 0, 0, 123456, tzinfo=timezone.utc)) == "2026-11-03T09:00:00.123Z"
    assert utc_iso(datetime(2026, 11, 3, 9, 0)) == "2026-11-03T09:00:00.000Z"  # naive: taken as UTC
    assert TIMESTAMP.fullmatch(utc_now())


def test_routing_deadlines_have_the_same_format() -> None:
    from triage.routing import decide, load_rules
    post = {"id": "t:1", "source": "twitter", "text": "Mein Internet geht nicht", "created_at": "2026-11-03T09:00:00Z",
            "language": {"code": "de"}, "intent": {"label": "complaint"}, "sentiment": {"label": "negative"},
            "pii": {"found": False, "types": []}}
    assert TIMESTAMP.fullmatch(decide(load_rules("builtin:telecom-de"), post).due_at or "")


# 4. the open statuses: defined once

def _string_collections(path: Path) -> list[tuple[int, set[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            found.append((node.lineno, {e.value for e in node.elts}))  # type: ignore[attr-defined]
    return found


def test_the_open_statuses_are_defined_once() -> None:
    from apps import desk, service_level
    definitions = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "apps").rglob("*.py"))
                   for line, values in _string_collections(path) if values == set(desk.OPEN_STATUSES)]
    assert len(definitions) == 1 and definitions[0].startswith("apps/desk.py:"), definitions
    assert service_level.OPEN["terms"]["status"] == list(desk.OPEN_STATUSES)


# 5. models/hub_models.py: a real check, not an assert

def test_hub_models_has_no_module_level_assert() -> None:
    tree = ast.parse((ROOT / "models" / "hub_models.py").read_text(encoding="utf-8"))
    assert not [node.lineno for node in tree.body if isinstance(node, ast.Assert)]


def test_zero_shot_intent_refuses_hypotheses_that_do_not_match_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from models import hub_models
    hub_models.check_hypotheses(hub_models.INTENT_HYPOTHESES)  # the shipped phrasing is complete
    partial = {k: v for k, v in hub_models.INTENT_HYPOTHESES.items() if k != "spam"}
    monkeypatch.setattr(hub_models, "INTENT_HYPOTHESES", partial)
    monkeypatch.setattr(hub_models, "pipeline", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    with pytest.raises(ValueError, match="no hypothesis for spam"):
        hub_models.ZeroShotIntent("any/model")
    with pytest.raises(ValueError, match="not intent labels: refund"):
        hub_models.check_hypotheses({**hub_models.INTENT_HYPOTHESES, "spam": "spam", "refund": "a refund request"})
    with pytest.raises(ValueError, match="the same way"):
        hub_models.check_hypotheses({**partial, "spam": partial["praise"]})


# 6. `triage connect --help` names every source type

def test_connect_help_names_every_source_type(capsys: pytest.CaptureFixture) -> None:
    from cli.main import main
    with pytest.raises(SystemExit) as exit_:
        main(["connect", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    named = re.search(r"\(types: ([^)]*)\)", help_text)
    assert named, help_text
    types = named.group(1).split(", ")
    assert set(types) == {"rss", "discourse", "mastodon", "reddit", "x", "facebook", "youtube", "khoros", "app_store",
                          "google_play", "webhook", "replay"}
    from connectors.config import ConnectConfig  # every name listed is one the sources file accepts
    for kind in types:
        with pytest.raises(Exception) as error:
            ConnectConfig.model_validate({"sources": [{"type": kind}]})
        assert "does not match any of the expected tags" not in str(error.value)


# Integration: a processed post, searched by its title, then claimed

def _post(i: int, title: str, text: str) -> dict[str, Any]:
    created = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(microsecond=0)
    return {"schema_version": 1, "id": f"review:{i}", "source": "review", "title": title, "text": text,
            "created_at": created.isoformat().replace("+00:00", "Z")}


@pytest.fixture(scope="module")
def review_settings(live: Settings, run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from cli.main import main
    posts = tmp_path_factory.mktemp("review") / "posts.jsonl"
    rows = [_post(1, "Zauberkiste seit Dienstag kaputt", "Mein Internet geht seit gestern nicht mehr, bitte helft mir."),
            _post(2, "Rechnung", "Warum ist meine Rechnung diesen Monat doppelt so hoch?")]
    posts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-review"}, kafka=False) as settings:
        assert main(["batch", "--input", str(posts), "--output", "es"]) == 0
        yield settings


@pytest.mark.integration
def test_a_post_is_found_by_a_word_only_its_title_holds(review_settings: Settings) -> None:
    from apps.query import QueryFilters, search
    from core.clients import elasticsearch_client
    cfg = review_settings.elasticsearch
    es = elasticsearch_client(cfg)
    try:
        es.indices.refresh(index=cfg.read_alias)
        result = search(es, cfg.read_alias, QueryFilters(text="Zauberkiste"))
    finally:
        es.close()
    assert result["total"] == 1
    [post] = result["posts"]
    assert "zauberkiste" not in post["text_redacted"].lower() and "Zauberkiste" in post["title_redacted"]


def _timestamps(document: Any, path: str = "") -> dict[str, str]:
    """Every `*_at` / `at` value in a document, by its dotted path."""
    found: dict[str, str] = {}
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}.{key}" if path else key
            if (key == "at" or key.endswith("_at")) and isinstance(value, str):
                found[where] = value
            else:
                found.update(_timestamps(value, where))
    elif isinstance(document, list):
        for i, value in enumerate(document):
            found.update(_timestamps(value, f"{path}[{i}]"))
    return found


@pytest.mark.integration
def test_a_processed_and_claimed_post_carries_one_timestamp_format(review_settings: Settings) -> None:
    from apps import desk
    from core.clients import elasticsearch_client
    from core.documents import doc_key
    cfg = review_settings.elasticsearch
    es = elasticsearch_client(cfg)
    try:
        desk.claim(es, cfg, "review:1", "alice")
        desk.add_note(es, cfg, "review:1", "alice", "called back")
        desk.answer(es, cfg, "review:2", "bob")
        es.indices.refresh(index=f"{cfg.read_alias},{cfg.private_index}")
        written = {}
        for post_id in ("review:1", "review:2"):
            for index in (cfg.read_alias, cfg.private_index):
                source = es.get(index=index, id=doc_key(post_id))["_source"]
                # created_at is the source's own time, passed through as it came
                written.update({f"{post_id} {index} {k}": v for k, v in _timestamps(source).items()
                                if k != "created_at"})
    finally:
        es.close()
    fields = {key.rsplit(" ", 1)[1] for key in written}
    assert {"processed_at", "triage.due_at", "agent.claimed_at", "agent.updated_at", "agent.answered_at",
            "agent_notes[0].at"} <= fields, fields
    assert {k: v for k, v in written.items() if not TIMESTAMP.fullmatch(v)} == {}
