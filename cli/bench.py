"""`triage bench`: batch enrichment throughput and peak memory, JSONL->JSONL and JSONL->Elasticsearch.

Each scenario runs as its own `triage batch` process so wall time includes start-up and model load
and peak RSS (from wait4) belongs to that run alone. The input repeats the samples with small
variations so texts are not byte-identical.
"""
from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from core.config import Settings
from core.provision import setup_all

_EDITS = [
    lambda t: t + " 😡", lambda t: t + "!!", lambda t: t.lower(), lambda t: "@service " + t,
    lambda t: t + " #kundenservice", lambda t: t.replace(" ", "  ", 1), lambda t: t,
]


def read_posts(samples: str) -> list[dict[str, Any]]:
    """Every post in the JSONL files matching the glob."""
    posts = [json.loads(line) for p in sorted(glob.glob(samples)) for line in open(p, encoding="utf-8") if line.strip()]
    if not posts:
        raise FileNotFoundError(f"no sample posts match {samples}")
    return posts


def make_input(samples: str, n: int, path: Path, seed: int = 7) -> None:
    posts = read_posts(samples)
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            post = dict(posts[i % len(posts)])
            post["id"] = f"{post['id']}-bench{i}"
            post["text"] = rng.choice(_EDITS)(post["text"])
            out.write(json.dumps(post, ensure_ascii=False) + "\n")


def _run(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryFile() as captured:  # a pipe read only after the exit would block a chatty child
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=captured)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        captured.seek(0)
        stderr = captured.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark run failed: {' '.join(argv)}\n{stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def run_batch_benchmark(settings: Settings, samples: str, n: int, workdir: str, config: Optional[str]) -> int:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "input.jsonl"
    make_input(samples, n, source)
    env = dict(os.environ, TRIAGE_ES_INDEX_PREFIX="triage-bench")  # keep synthetic posts out of the real index
    bench_settings = settings.model_copy(update={"elasticsearch": settings.elasticsearch.model_copy(
        update={"index_prefix": "triage-bench"})})
    setup_all(bench_settings, kafka=False)
    base = [sys.executable, "-m", "cli.main"] + (["--config", config] if config else []) + ["batch", "--input", str(source)]
    rows = []
    for name, output in (("jsonl -> jsonl", str(work / "output.jsonl")), ("jsonl -> elasticsearch", "es")):
        summary_file = work / "summary.json"
        measured = _run(base + ["--output", output, "--summary-json", str(summary_file)], env)
        summary = json.loads(summary_file.read_text())
        records = summary["counters"].get("records_in", 0)
        rows.append({"scenario": name, "posts": records, **measured, "pipeline_s": summary["seconds"],
                     "posts_per_s": records / summary["seconds"], "posts_per_s_wall": records / measured["wall_s"]})
    if "understanding" in settings.enrichment.steps:
        rows.append(_naive_baseline(settings, source, min(n, 2000), work, env))
    print(f"Batch enrichment benchmark: {n} posts, steps {', '.join(settings.enrichment.steps)}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'scenario':<24} {'posts':>7} {'posts/s':>9} {'pipeline s':>11} {'wall s':>8} {'wall posts/s':>13} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['scenario']:<24} {r['posts']:>7} {r['posts_per_s']:>9.0f} {r['pipeline_s']:>11.1f} {r['wall_s']:>8.1f} "
              f"{r['posts_per_s_wall']:>13.0f} {r['peak_rss_mb']:>12.0f}")
    if len(rows) == 3:
        print(f"full enrichment (one encoder pass, all steps) vs naive (one pipeline per task): "
              f"{rows[0]['posts_per_s'] / rows[2]['posts_per_s']:.1f}x the posts/s")
        print(f"model load: {rows[2]['understanding_load_s']:.1f} s for the shared encoder and heads, "
              f"{rows[2]['pipelines_load_s']:.1f} s for the {rows[2]['tasks']} naive pipelines")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


def _naive_baseline(settings: Settings, source: Path, limit: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Same posts through one transformers pipeline per task, in its own process."""
    from models import naive_baseline
    from models.understanding import ARTIFACTS_DIR, TextUnderstanding
    cfg = settings.models
    started = time.monotonic()
    understanding = TextUnderstanding.load(Path(cfg.artifacts) if cfg.artifacts else ARTIFACTS_DIR, cfg.cache_dir,
                                           cfg.encoder, cfg.threads, int8=False)
    load_s = time.monotonic() - started
    folders = naive_baseline.build_task_models(understanding, work / "naive-models")
    spec = {"input": str(source), "limit": limit, "threads": cfg.threads, "folders": {k: str(v) for k, v in folders.items()}}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "models.naive_baseline", json.dumps(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out = json.loads(proc.stdout.read().decode().strip().splitlines()[-1]) if proc.stdout else {}
    return {"scenario": "naive: pipeline per task", "posts": out["posts"], "wall_s": wall,
            "peak_rss_mb": usage.ru_maxrss / 1024, "pipeline_s": out["run_s"], "posts_per_s": out["posts_per_s"],
            "posts_per_s_wall": out["posts"] / wall, "understanding_load_s": load_s,
            "pipelines_load_s": out["load_s"], "tasks": out["tasks"]}
