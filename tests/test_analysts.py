"""What analysts see: `triage query` and the notebook agree with direct counts and never show personal data."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SAMPLES, own_names
from cli.main import main
from core.clients import elasticsearch_client
from core.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def analysts(live: Settings, run_id: str) -> Iterator[Settings]:
    """The sample posts in an index of this module's own: other tests add posts, claims and relabels to the shared
    index, and under `make test` the files run in whatever order the two workers take them."""
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-analysts"}, kafka=False) as settings:
        assert main(["batch", "--input", str(SAMPLES), "--output", "es"]) == 0
        es = elasticsearch_client(settings.elasticsearch)
        es.indices.refresh(index=[settings.elasticsearch.read_alias, settings.elasticsearch.cases_read_alias])
        es.close()
        yield settings


@pytest.fixture
def indexed_samples(analysts: Settings) -> int:
    return sum(1 for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip())
NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _query_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    capsys.readouterr()
    assert main(["query", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_equals_direct_counts(indexed_samples: int, enriched_samples: list[dict],
                                      capsys: pytest.CaptureFixture) -> None:
    summary = _query_json(capsys, "--summary")
    assert summary["total"] == indexed_samples == len(enriched_samples)
    assert summary["source"] == dict(Counter(p["source"] for p in enriched_samples))
    assert summary["language"] == dict(Counter(p["language"]["code"] for p in enriched_samples))
    assert summary["pii_found"] == sum(p["pii"]["found"] for p in enriched_samples)
    assert summary["pii_type"] == dict(Counter(t for p in enriched_samples for t in p["pii"]["types"]))
    assert sum(summary["over_time"].values()) == indexed_samples


def test_filters_and_full_text(indexed_samples: int, enriched_samples: list[dict],
                               capsys: pytest.CaptureFixture) -> None:
    german_twitter = [p for p in enriched_samples if p["source"] == "twitter" and p["language"]["code"] == "de"]
    result = _query_json(capsys, "--source", "twitter", "--language", "de", "--size", "500")
    assert result["total"] == len(german_twitter)
    with_iban = [p for p in enriched_samples if "iban" in p["pii"]["types"]]
    assert _query_json(capsys, "--pii-type", "iban")["total"] == len(with_iban) > 0
    assert _query_json(capsys, "--no-pii")["total"] == sum(not p["pii"]["found"] for p in enriched_samples)
    hits = _query_json(capsys, "Glasfaseranschluss", "--size", "50")["posts"]
    assert hits and all("glasfaser" in p["text_redacted"].lower() for p in hits)
    window = _query_json(capsys, "--since", "2026-11-03", "--until", "2026-11-04T23:59:59Z", "--size", "0")
    assert window["total"] == sum("2026-11-03" <= p["created_at"][:10] <= "2026-11-04" for p in enriched_samples)


def test_query_output_never_contains_personal_data(indexed_samples: int, enriched_samples: list[dict],
                                                   capsys: pytest.CaptureFixture) -> None:
    values = {p["text"][s["start"]:s["end"]] for p in enriched_samples for s in p["pii"]["spans"]}
    assert values
    for args in (["--pii", "--size", "500"], ["--pii", "--size", "500", "--json"]):
        capsys.readouterr()
        assert main(["query", *args]) == 0
        shown = capsys.readouterr().out
        assert "[IBAN]" in shown
        leaked = [v for v in values if v in shown]
        assert leaked == []


def _expected_case_figures(es: Any, index: str) -> dict[str, object]:
    """The service-level notebook's counts, counted directly over the case documents."""
    from elasticsearch.helpers import scan
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    cases = [hit["_source"] for hit in scan(es, index=index) if hit["_source"]["customer_posts"]]
    waiting = [c for c in cases if c["status"] in ("new", "claimed")]
    overdue = [c for c in waiting if c.get("due_at") and c["due_at"] < now]
    queues = {c["queue"] for c in cases if c.get("queue")}
    return {"service_level": {"cases": len(cases), "open": len(waiting), "overdue": len(overdue),
                              "answered": sum(bool(c.get("answered_at")) for c in cases)},
            "open_by_queue": {q: sum(c["queue"] == q for c in waiting) for q in queues},
            "overdue_by_queue": {q: sum(c["queue"] == q for c in overdue) for q in queues}}


def _expected_notebook_figures(name: str, posts: list[dict]) -> dict[str, object]:
    """What each notebook must print, counted directly from the batch output of the same posts."""
    def counts(key) -> dict:  # type: ignore[no-untyped-def]
        return dict(Counter(key(p) for p in posts if key(p) is not None))
    if name == "overview":
        return {"total_posts": len(posts), "language_counts": counts(lambda p: p["language"]["code"]),
                "intent_counts": counts(lambda p: p["intent"]["label"]),
                "queue_counts": counts(lambda p: p["triage"]["queue"]), "source_counts": counts(lambda p: p["source"])}
    topics = counts(lambda p: p["topic"]["label"])
    negative = Counter(p["topic"]["label"] for p in posts if p["sentiment"]["label"] == "negative")
    return {"topic_counts": topics, "topic_negative_share": {t: round(negative[t] / n, 4) for t, n in topics.items()}}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_against_the_index_and_matches_direct_counts(notebook: Path, indexed_samples: int,
                                                                   enriched_samples: list[dict], es: Any,
                                                                   analysts: Settings, tmp_path: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit notebooks stripped"
    os.environ["TRIAGE_NOTEBOOK_OUTPUT"] = str(tmp_path)
    es.indices.refresh(index=analysts.elasticsearch.cases_read_alias)  # the batch's case writes, searchable now
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("TRIAGE_NOTEBOOK_OUTPUT", None)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    shown = dict(line.split("=", 1) for line in printed.splitlines() if re.match(r"^[a-z_]+=", line))
    expected = (_expected_case_figures(es, analysts.elasticsearch.cases_read_alias) if notebook.stem == "service_level"
                else _expected_notebook_figures(notebook.stem, enriched_samples))
    assert {k: json.loads(shown[k]) for k in expected} == expected
    assert list(tmp_path.glob("*.png")), "plots are written to TRIAGE_NOTEBOOK_OUTPUT"
