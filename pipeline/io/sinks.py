"""File sinks for `triage batch`: JSONL files for posts and dead letters.

Elasticsearch and Kafka are written by pipeline/io/write.py (WriteToElasticsearch, WriteToKafka),
the same transforms the streaming job uses.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from contextlib import contextmanager
from typing import Any, Iterator

import apache_beam as beam

from core.records import public


def write_jsonl(pcoll: beam.PCollection, path: str, label: str) -> Any:
    """Exactly one file at `path` (no shard suffix), one JSON document a line."""
    return pcoll | label >> beam.io.WriteToText(path, num_shards=1, shard_name_template="")


def _temp_dirs(path: str) -> set[str]:
    """The folders Beam's file sink (WriteToText) stages a local `path` in: beam-temp-<name>-<uuid> beside it."""
    if "://" in path:
        return set()  # an object store (gs://, s3://): its staged objects are not handled here
    folder, name = os.path.split(os.path.abspath(path))
    return {p for p in glob.glob(os.path.join(glob.escape(folder), f"beam-temp-{glob.escape(name)}-*"))
            if os.path.isdir(p)}


@contextmanager
def remove_temp_dirs_on_failure(paths: list[str]) -> Iterator[None]:
    """A run that fails leaves no staging folders beside its JSONL outputs; only the ones it created go.

    Beam removes them after a successful write, but not when a step fails: they would pile up next to the
    output with partial, never-finalized shards. Folders that existed before the run (another run's, or
    one still writing to the same path) are left alone.
    """
    before = {path: _temp_dirs(path) for path in paths}
    try:
        yield
    except BaseException:
        for path, existing in before.items():
            for folder in sorted(_temp_dirs(path) - existing):
                shutil.rmtree(folder, ignore_errors=True)  # never hide the run's own error behind a cleanup error
        raise


def to_json_line(post: dict[str, Any]) -> str:
    return json.dumps(public(post), ensure_ascii=False)
