"""`triage bench scale` end to end with tiny sizes on the live local services.

The command is run as a user runs it, with the fake steps (--models fake) and 300 posts, and its --json figures are
checked for what a reader of the table would check: every figure there and positive, the counts equal to the
posts sent (nothing lost by any engine or the stream), the reprocess reader saw no error and never fewer posts
than before the swap, and nothing of the benchmark is left on the servers. Speed itself is not asserted, nor is the
failover's recovery: on noida-db a restarted member sometimes loses its partitions again in a later rebalance (seen
in a benchmark run and once in CI), which the stream tests' kill -9 cases cover on both brokers; the failover figures
are printed by the command and checked only as part of the table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from core.clients import elasticsearch_client, kafka_options
from core.config import Settings

pytestmark = pytest.mark.integration
pytest.importorskip("distributed", reason="the DaskRunner needs the extra: pip install -e .[dask]")
POSTS, SIZES, WORKERS = 300, (200, 300), 2
QUERIES = {"agents' queue (cases)", "a case", "query --summary", "analysts' trends"}


@pytest.fixture(scope="module")
def figures(live: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("scale")
    out = work / "scale.json"
    done = subprocess.run([sys.executable, "-m", "cli.main", "bench", "scale", "--n", str(POSTS), "--query-sizes",
                           ",".join(map(str, SIZES)), "--workers", str(WORKERS), "--models", "fake", "--repeats", "3",
                           "--workdir", str(work), "--json", str(out)],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"table": done.stdout, **json.loads(out.read_text())}


def _positive(row: dict[str, Any], *names: str) -> None:
    for name in names:
        assert row[name] is not None and row[name] > 0, (name, row)


def _limited(row: dict[str, Any]) -> None:
    assert row["limit"] and "cores used" in row["limit"]
    assert row["cpu"]["seconds"] > 0 and row["cpu"]["cpus"] >= 1


def test_batch_on_fnapi_and_dask_enriches_every_post(figures: dict[str, Any]) -> None:
    rows = figures["batch"]
    assert [(r["engine"], r["workers"]) for r in rows] == [("FnApiRunner", 1), ("DaskRunner", WORKERS)]
    for row in rows:
        assert row["posts_in"] == row["enriched"] == row["written"] == POSTS
        _positive(row, "posts_per_s", "pipeline_s", "wall_s", "peak_rss_mb")
        _limited(row)
    dask = rows[1]
    assert "from what was written" in dask["counted_from"]  # the DaskRunner has no metrics: counted from the output
    assert dask["cpu"]["cores"]["dask workers"] > 0  # the work ran in the cluster's worker processes


def test_stream_indexes_every_post_flat_out(figures: dict[str, Any]) -> None:
    [row] = figures["stream"]
    assert row["workers"] == WORKERS and row["posts"] == row["indexed"] == POSTS
    _positive(row, "posts_per_s", "seconds", "sent_per_s")
    _limited(row)
    assert row["cpu"]["cores"]["stream workers"] > 0


def test_reprocess_keeps_every_post_readable_throughout(figures: dict[str, Any]) -> None:
    result = figures["reprocess"]
    assert result["posts_before"] == result["posts_after"] == result["re_enriched"] > 0
    assert result["dead_letters"] == 0
    reader = result["reader"]
    assert reader["reads"] > 0 and reader["errors"] == []
    assert reader["min_count"] >= result["posts_before"]  # never fewer posts than before the swap
    _positive(result, "seconds", "peak_rss_mb", "posts_per_s")
    _limited(result)


def test_every_product_query_is_timed_at_each_size(figures: dict[str, Any]) -> None:
    timed = {(row["query"], row["size"]): row for row in figures["queries"]}
    assert set(timed) == {(query, size) for query in QUERIES for size in SIZES}
    for row in timed.values():
        assert row["n"] >= 3
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        _limited(row)
    assert [step["to"] for step in figures["indexing"]] == sorted(SIZES)
    assert sum(step["enriched"] for step in figures["indexing"]) == max(SIZES)


def test_the_table_shows_each_part(figures: dict[str, Any]) -> None:
    table = figures["table"]
    for heading in ("batch (JSONL -> JSONL)", "stream, flat out", "failover", "reprocess:", "reader on the read alias",
                    "query --summary", "limited by"):
        assert heading in table


def test_nothing_of_the_benchmark_is_left_on_the_servers(figures: dict[str, Any], live: Settings) -> None:
    from kafka.admin import KafkaAdminClient
    es = elasticsearch_client(live.elasticsearch)
    try:
        assert list(es.indices.get(index="*benchscale*", ignore_unavailable=True)) == []
        templates = es.indices.get_index_template()["index_templates"]
        assert [t["name"] for t in templates if "benchscale" in t["name"]] == []
    finally:
        es.close()
    admin = KafkaAdminClient(**kafka_options(live.kafka))
    try:
        assert [topic for topic in admin.list_topics() if "benchscale" in topic] == []
    finally:
        admin.close()


def test_skipped_phases_are_not_run_and_the_indexed_ones_are(live: Settings, tmp_path: Path) -> None:
    """`--skip batch,stream` repeats only the indexed part (a run that failed there, a real Elasticsearch later)."""
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, "-m", "cli.main", "bench", "scale", "--n", "60", "--query-sizes", "60",
                           "--skip", "batch,stream", "--models", "fake", "--repeats", "3", "--workdir", str(tmp_path),
                           "--json", str(out)], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert "batch" not in figures and "stream" not in figures and figures["skipped"] == ["batch", "stream"]
    assert figures["reprocess"]["posts_after"] == 60 and figures["reprocess"]["reader"]["errors"] == []
    assert {row["query"] for row in figures["queries"]} == QUERIES
    assert "batch (JSONL" not in done.stdout and "skipped: batch, stream" in done.stdout
