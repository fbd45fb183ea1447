"""`triage batch` JSONL -> JSONL, no services and no network: enrichment, dead letters, summary, exit codes."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import schemas
from conftest import SAMPLES
from cli.main import main

GOOD = SAMPLES.read_bytes().splitlines()[:40]
POISON = {
    "invalid_json": b'{"id": "t:bad", "source": "twitter", "text": "unterminated',
    "invalid_utf8": b'{"id": "t:latin1", "source": "twitter", "text": "K\xfcndigung"}',
    "empty_text": b'{"id": "t:empty", "source": "twitter", "text": "   "}',
    "oversized_record": json.dumps({"id": "t:huge", "source": "blog", "text": "x" * 1_100_000}).encode(),
    "text_too_long": json.dumps({"id": "t:long", "source": "blog", "text": "lang " * 5000}).encode(),
    "title_too_long": json.dumps({"id": "t:title", "source": "blog", "text": "ok", "title": "😀" * 20_001}).encode(),
    "schema_violation": b'{"id": "t:noschema", "source": "twitter", "body": "text is missing"}',
    "not_an_object": b'["a", "list"]',
    "nested_too_deep": b"[" * 10_000 + b"]" * 10_000,  # once a RecursionError that ended the run with no output
}


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("batch")
    source = work / "posts.jsonl"
    lines = GOOD[:20] + list(POISON.values()) + [b"", b"   "] + GOOD[20:]
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = work / "enriched.jsonl"
    code = main(["batch", "--input", str(source), "--output", str(output), "--summary-json", str(work / "s.json")])
    return {"code": code, "work": work, "source": source, "output": output,
            "dead": work / "enriched.dead-letters.jsonl", "summary": json.loads((work / "s.json").read_text())}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.models
def test_every_good_post_is_enriched_once(batch_run: dict) -> None:
    assert batch_run["code"] == 0
    enriched = _read(batch_run["output"])
    assert sorted(p["id"] for p in enriched) == sorted(json.loads(line)["id"] for line in GOOD)
    for post in enriched:
        assert schemas.first_error(schemas.ENRICHED_POST_SCHEMA, post) is None, post["id"]
        assert set(post["model_versions"]) == {"language", "pii", "understanding", "routing"}
        assert post["triage"]["queue"] and post["triage"]["priority"] in ("P1", "P2", "P3", "P4")
        for field in ("sentiment", "intent", "relevance"):
            assert post[field]["label"] in post[field]["scores"]
            assert abs(sum(post[field]["scores"].values()) - 1) < 0.01


@pytest.mark.models
def test_enrichment_results_are_right(batch_run: dict) -> None:
    enriched = {p["id"]: p for p in _read(batch_run["output"])}
    originals = [json.loads(line) for line in GOOD]
    wrong_language = [p["id"] for p in originals
                      if enriched[p["id"]]["language"]["code"] not in (p["metadata"]["written_language"], "und")]
    assert wrong_language == []
    for post in enriched.values():
        for span in post["pii"]["spans"]:
            assert post["text"][span["start"]:span["end"]] not in post["text_redacted"]
        if not post["pii"]["found"]:
            assert post["text_redacted"] == post["text"]


@pytest.mark.models
def test_bad_records_become_dead_letters_with_reason_and_original_bytes(batch_run: dict) -> None:
    letters = _read(batch_run["dead"])
    by_reason = {letter["reason_code"]: letter for letter in letters}
    assert sorted(by_reason) == sorted(POISON)
    for reason_code, payload in POISON.items():
        letter = by_reason[reason_code]
        assert base64.b64decode(letter["payload_base64"]) == payload
        assert letter["origin"] == f"file:{batch_run['source']}"
        assert letter["reason"]


@pytest.mark.models
def test_summary_counts_everything_and_loses_nothing(batch_run: dict) -> None:
    counters = batch_run["summary"]["counters"]
    assert counters["records_in"] == len(GOOD) + len(POISON)  # blank lines are not records
    assert counters["enriched"] + counters["dead_letters"] == counters["records_in"]
    assert counters["dead_letters"] == len(POISON)
    assert sum(v for k, v in counters.items() if k.startswith("source.")) == len(GOOD)


def test_the_summary_counts_duplicate_post_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("TRIAGE_ENRICHMENT__STEPS", "[language]")
    first, second = (json.loads(line) for line in GOOD[:2])
    again = {**first, "title": "Zweite Fassung"}
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in (first, second, again, again)))
    assert main(["batch", "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
                 "--summary-json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["counters"]["duplicate_ids"] == 2
    assert "duplicate post ids: 2 extra versions" in capsys.readouterr().out


@pytest.mark.models
def test_max_errors_makes_the_run_fail(batch_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["batch", "--input", str(batch_run["source"]), "--output", str(tmp_path / "out.jsonl"),
                 "--max-errors", "3"])
    assert code == 3
    assert "more than --max-errors 3" in capsys.readouterr().err
    assert len(_read(tmp_path / "out.jsonl")) == len(GOOD)  # the run still finished and wrote its output


def test_missing_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["batch", "--input", str(tmp_path / "nothing-*.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert code == 1
    assert "no input file matches" in capsys.readouterr().err


def test_a_failed_run_leaves_no_beam_temp_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Elasticsearch is unreachable, so the run fails after the dead-letter file's sink started staging."""
    from core.services import free_port
    source = tmp_path / "posts.jsonl"
    source.write_bytes(b"\n".join(GOOD[:5] + [POISON["invalid_json"]]) + b"\n")
    out = tmp_path / "out"
    out.mkdir()
    other_run = out / "beam-temp-dead.jsonl-0123456789abcdef"  # not this run's: stays
    other_run.mkdir()
    monkeypatch.setenv("TRIAGE_ES_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("TRIAGE_ELASTICSEARCH__MAX_RETRIES", "0")
    monkeypatch.setenv("TRIAGE_ENRICHMENT__STEPS", "[language]")
    code = main(["batch", "--input", str(source), "--output", "es", "--dead-letters", str(out / "dead.jsonl")])
    assert code == 1
    assert "did not accept" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [other_run.name]
