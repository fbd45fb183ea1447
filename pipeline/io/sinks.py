"""Beam sinks for `triage batch`: JSONL files, Elasticsearch and Kafka, for posts and dead letters."""
from __future__ import annotations

import glob
import json
import os
import shutil
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import apache_beam as beam

from core.clients import elasticsearch_client
from core.config import ElasticsearchSettings, KafkaSettings
from core.records import DeadLetter, RawRecord, dead_letter, post_payload, public
from pipeline.io.elasticsearch import ElasticsearchBulkWriter
from core.kafka_writer import KafkaWriter

REJECTED_TAG = "rejected"


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


class IndexBatches(beam.DoFn):
    """Bulk-indexes batches of posts; documents Elasticsearch rejects come out tagged as dead letters."""

    def __init__(self, cfg: ElasticsearchSettings, index: Optional[str] = None) -> None:
        self.cfg, self.index = cfg, index

    def setup(self) -> None:
        self._es = elasticsearch_client(self.cfg)
        self._writer = ElasticsearchBulkWriter(self._es, self.cfg, self.index)

    def process(self, batch: list[dict[str, Any]]) -> Iterator[Any]:
        for post, reason in self._writer.write(batch):
            record = RawRecord(post_payload(post), f"post:{post['id']}")
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, dead_letter("index_rejected", reason, record))

    def teardown(self) -> None:
        self._es.close()


class ProduceBatches(beam.DoFn):
    """Writes batches of posts (keyed by id) or dead letters (reason in headers) to a Kafka topic."""

    def __init__(self, cfg: KafkaSettings, topic: str) -> None:
        self.cfg, self.topic = cfg, topic

    def setup(self) -> None:
        self._writer = KafkaWriter(self.cfg)

    def process(self, batch: list[Any]) -> None:
        if batch and isinstance(batch[0], DeadLetter):
            self._writer.write_dead_letters(self.topic, batch)
        else:
            self._writer.write_posts(self.topic, batch)

    def teardown(self) -> None:
        self._writer.close()


def to_json_line(post: dict[str, Any]) -> str:
    return json.dumps(public(post), ensure_ascii=False)
