"""`triage batch` and `triage reprocess` on Beam's DaskRunner against a real dask.distributed cluster.

The cluster (a scheduler and two worker processes on loopback) is started and stopped with the product's own
command, `triage dask up|down`. Beam's DaskRunner loses elements silently where its translation is weak
(pipeline/elementwise.py lists how), so these tests count: every post id of the input must come out exactly once,
in the JSONL file and in the index, and each enriched post must equal what FnApiRunner makes of the same input.
The enrichment uses the fake steps of pipeline/testing.py (no model).
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from elasticsearch.helpers import scan

from conftest import ROOT, own_names
from core.config import Settings
from core.documents import doc_key
from core.services import free_port
from pipeline.batch import METRICS, BatchJob, Summary, run
from pipeline.testing import FAKE_STEPS

pytestmark = pytest.mark.integration
pytest.importorskip("distributed", reason="the DaskRunner needs the extra: pip install -e .[dask]")
POSTS = 1000


def _triage(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[dict[str, Any]]:
    """`triage dask up --workers 2` on free ports; `triage dask down` afterwards."""
    port, dashboard = free_port(), free_port()
    started = _triage("dask", "up", "--workers", "2", "--port", str(port), "--dashboard-port", str(dashboard))
    assert started.returncode == 0, started.stderr
    try:
        yield {"address": f"tcp://127.0.0.1:{port}", "dashboard": dashboard, "up": started.stdout}
    finally:
        stopped = _triage("dask", "down")
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def posts_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """Generated posts, plus one post twice, a line that is no JSON and a deletion; returns (file, post ids)."""
    path = tmp_path_factory.mktemp("dask") / "posts.jsonl"
    generated = _triage("generate", "--n", str(POSTS), "--out", str(path), "--seed", "3")
    assert generated.returncode == 0, generated.stderr
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    deletion = {"schema_version": 1, "kind": "deletion", "id": first["id"], "source": first["source"],
                "deleted_at": "2026-12-01T00:00:00Z"}
    path.write_text("\n".join([*lines, lines[5], "{not json", json.dumps(deletion)]) + "\n", encoding="utf-8")
    return path, {json.loads(line)["id"] for line in lines}


def _dask(cluster: dict[str, Any]) -> list[str]:
    return ["--runner=DaskRunner", f"--dask_client_address={cluster['address']}"]


def _batch(settings: Settings, source: Path, output: str, dead: Path, beam_args: list[str]) -> Summary:
    return run(settings, BatchJob(inputs=[str(source)], output=output, dead_letters=str(dead), steps=FAKE_STEPS,
                                  beam_args=beam_args))


def _by_id(lines: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Posts by id, without the processing time (the one field that differs between two runs)."""
    posts: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        post = json.loads(line)
        post.pop("processed_at")
        posts.setdefault(post["id"], []).append(post)
    return posts


def test_the_cluster_has_two_workers_and_a_dashboard(cluster: dict[str, Any]) -> None:
    assert f"scheduler: {cluster['address']}" in cluster["up"]
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['dashboard']}/status", timeout=10) as page:
        assert page.status == 200 and "Dask" in page.read().decode("utf-8", "replace")
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['dashboard']}/json/identity.json", timeout=10) as reply:
        workers = json.load(reply)["workers"].values()
    assert sorted(w["name"] for w in workers) == ["triage-worker-1", "triage-worker-2"]
    assert all(w["nthreads"] == 1 for w in workers)
    status = _triage("dask", "status")
    assert status.stdout.count("healthy") == 3, status.stdout


def test_batch_to_jsonl_loses_and_duplicates_nothing_and_equals_fnapi(
        cluster: dict[str, Any], settings: Settings, posts_file: tuple[Path, set[str]], tmp_path: Path) -> None:
    source, ids = posts_file
    on_dask = _batch(settings, source, str(tmp_path / "dask.jsonl"), tmp_path / "dask.dead.jsonl", _dask(cluster))
    in_process = _batch(settings, source, str(tmp_path / "fn.jsonl"), tmp_path / "fn.dead.jsonl", [])

    lines = (tmp_path / "dask.jsonl").read_text(encoding="utf-8").splitlines()
    posts = _by_id(lines)
    assert set(posts) == ids  # nothing lost
    assert len(lines) == POSTS + 1  # nothing duplicated: the one post given twice comes twice, as in the input
    assert posts == _by_id((tmp_path / "fn.jsonl").read_text(encoding="utf-8").splitlines())
    dead = [json.loads(line) for line in (tmp_path / "dask.dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [letter["reason_code"] for letter in dead] == ["invalid_json"]
    assert not list(tmp_path.glob("*.parts"))  # the parts were merged and removed
    # The summary, counted from the files on Dask, says what FnApiRunner's metrics say.
    assert on_dask.counted_from != METRICS and "from what was written" in on_dask.counted_from
    assert on_dask.counters == in_process.counters
    assert on_dask.count("enriched") == POSTS + 1 and on_dask.count("duplicate_ids") == 1
    assert on_dask.count("deletions") == 1


def _documents(es: Any, index: str) -> dict[str, dict[str, Any]]:
    """The index's documents by their post id (pseudonymous there; each must be there once), without the
    processing time."""
    sources = [hit["_source"] for hit in scan(es, index=index, query={"query": {"match_all": {}}})]
    documents = {doc["id"]: {k: v for k, v in doc.items() if k != "processed_at"} for doc in sources}
    assert len(documents) == len(sources)
    return documents


@pytest.fixture()
def two_indexes(live: Settings, run_id: str) -> Iterator[tuple[Settings, Settings]]:
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-dask"}, kafka=False) as dask_settings, \
            own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-fnapi"}, kafka=False) as fn_settings:
        yield dask_settings, fn_settings


def test_batch_to_elasticsearch_and_reprocess_lose_and_duplicate_nothing(
        cluster: dict[str, Any], two_indexes: tuple[Settings, Settings], es: Any,
        posts_file: tuple[Path, set[str]], tmp_path: Path) -> None:
    from apps import reprocess
    dask_settings, fn_settings = two_indexes
    source, ids = posts_file
    summary = _batch(dask_settings, source, "es", tmp_path / "dask.dead.jsonl", _dask(cluster))
    _batch(fn_settings, source, "es", tmp_path / "fn.dead.jsonl", [])
    for cfg in (dask_settings.elasticsearch, fn_settings.elasticsearch):
        es.indices.refresh(index=[cfg.read_alias, cfg.private_index])

    on_dask = _documents(es, dask_settings.elasticsearch.read_alias)
    assert set(on_dask) == {doc_key(post_id) for post_id in ids}  # each id once (above), none missing
    assert summary.count("enriched") == POSTS + 1 and summary.count("dead_letters") == 1
    assert on_dask == _documents(es, fn_settings.elasticsearch.read_alias)
    first = json.loads(source.read_text(encoding="utf-8").splitlines()[0])["id"]
    assert on_dask[doc_key(first)].get("deleted_at")  # the deletion was applied after its post was written

    report = reprocess.reprocess(dask_settings, str(tmp_path / "reprocess"), _dask(cluster))
    es.indices.refresh(index=dask_settings.elasticsearch.read_alias)
    reprocessed = _documents(es, dask_settings.elasticsearch.read_alias)
    assert report.new_index.endswith("-000002") and report.cases_updated is None
    assert set(reprocessed) == set(on_dask)
    assert report.enriched == POSTS - 1  # the deleted post has no raw text left: copied as it is
    assert report.copied_unchanged == 1 and reprocessed[doc_key(first)].get("deleted_at")


def test_chunks_cover_every_line_once_and_the_runner_gets_its_full_name(tmp_path: Path) -> None:
    from pipeline.elementwise import DASK_RUNNER, dask_options, file_chunks, is_dask
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(f'{{"n": {i}}}\n'.encode() + (b"\n" if i % 3 == 0 else b"") for i in range(10)))
    chunks = file_chunks([str(path)], 4, first=7)
    assert [c.number for c in chunks] == [7, 8, 9]
    data = path.read_bytes()
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]] and chunks[-1].end == len(data)
    lines = [[json.loads(line)["n"] for line in data[c.start:c.end].splitlines() if line.strip()] for c in chunks]
    assert lines == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert is_dask(["--runner=DaskRunner"]) and is_dask(["--runner", DASK_RUNNER]) and not is_dask([])
    assert dask_options(["--runner=DaskRunner"]) == [f"--runner={DASK_RUNNER}", "--dask_partition_size=1"]
    assert dask_options(["--runner", "DaskRunner", "--dask_npartitions=4"]) == ["--runner", DASK_RUNNER,
                                                                              "--dask_npartitions=4"]
