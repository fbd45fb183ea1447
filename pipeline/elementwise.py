"""`triage batch` on Beam's DaskRunner: an element-wise graph that trusts neither the runner's grouping, nor its
bundles, nor its metrics.

Beam 2.77's DaskRunner turns each ParDo into a Dask `map_partitions`. Checked on a real scheduler with two worker
processes (README, "Distributed Beam runners"):
- every output of a multi-output ParDo reaches every consumer (the tags of `with_outputs` are not split);
- what a DoFn emits from finish_bundle is dropped, so BatchElements, hence RunInference, loses each bundle's last
  batch;
- only the graph's last leaf is computed: a second sink silently never runs;
- Read (ReadFromText) is not translated, metrics are not collected, and its GroupByKey loses elements.

So this graph is one chain of single-output ParDos whose elements are whole chunks. The driver cuts the input into
chunks of `enrichment.max_batch_size` posts (a range of lines of a file, or a list of index ids), one Create
element and one Dask partition each (--dask_partition_size=1), and every stage handles a chunk inside `process`:

    Create(chunks) | ReadChunk | Parse | <one ParDo per enrichment step> | Finish | WriteParts | Done

A failing step turns its chunk's posts into dead letters, as RunInference's exception handling does. WriteParts
stores each chunk's results in `<output>.parts/` under names made from the chunk number, written whole and then
renamed: a task Dask runs again rewrites the same file instead of adding one. Posts go to Elasticsearch by id,
which is idempotent too. After the pipeline the driver merges the parts into the requested files in input order
and counts the run's summary from them.

Deletions into an index are applied in a second pass, after the posts' pass finished: within one pass a deletion
and its post may sit in different chunks on different workers, and a deletion applied before its post was
written would mark nothing (the FnApiRunner graph waits for the posts with a side input instead). A file or
topic output gets the posts only; the deletions are counted.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from core.clients import elasticsearch_client
from core.config import ElasticsearchSettings, Settings
from core.records import DeadLetter, Deletion, RawRecord, dead_letter, parse_post
from pipeline.enrich import _failed_batch_to_dead_letters, finish, summary_keys
from pipeline.io.elasticsearch import ElasticsearchBulkWriter
from pipeline.io.sinks import to_json_line
from pipeline.io.sources import matching_ids, raw_posts
from pipeline.io.write import _as_record, write_patiently
from pipeline.steps import registry

if TYPE_CHECKING:
    from pipeline.batch import BatchJob, Target

log = logging.getLogger(__name__)
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
Item = Any  # in a chunk: a post (dict), a Deletion or a DeadLetter
Batch = tuple[int, list[Item]]  # (chunk number, its items in input order)


def is_dask(beam_args: Sequence[str]) -> bool:
    """Whether the Beam options name the DaskRunner (its short name or its full path)."""
    return any(name in ("DaskRunner", DASK_RUNNER) for name in _runner_names(beam_args))


def _runner_names(beam_args: Sequence[str]) -> Iterator[str]:
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            yield arg.partition("=")[2]
        elif arg == "--runner" and i + 1 < len(beam_args):
            yield beam_args[i + 1]


def dask_options(beam_args: Sequence[str]) -> list[str]:
    """The Beam options for the DaskRunner: its full path (Beam refuses the short name) and one chunk per Dask
    partition, unless the user chose a partitioning."""
    args = [f"--runner={DASK_RUNNER}" if arg == "--runner=DaskRunner" else DASK_RUNNER if arg == "DaskRunner" else arg
            for arg in beam_args]
    if not any(arg.startswith(("--dask_npartitions", "--dask_partition_size")) for arg in args):
        args.append("--dask_partition_size=1")
    return args


@dataclass(frozen=True)
class Chunk:
    """What one Dask partition enriches: bytes [start, end) of a JSONL file, or the raw posts of some index ids."""
    number: int
    source: str  # "file" or "es"
    name: str  # the file's path or the index
    start: int = 0
    end: int = 0
    ids: tuple[str, ...] = ()


def file_chunks(paths: Iterable[str], size: int, first: int = 0) -> list[Chunk]:
    """Chunks of `size` non-blank lines each, cut at line ends, in file order."""
    chunks: list[Chunk] = []
    for path in paths:
        start = offset = lines = 0
        with open(path, "rb") as handle:
            for line in handle:
                offset += len(line)
                lines += bool(line.strip())
                if lines == size:
                    chunks.append(Chunk(first + len(chunks), "file", path, start, offset))
                    start, lines = offset, 0
        if lines:
            chunks.append(Chunk(first + len(chunks), "file", path, start, offset))
    return chunks


def index_chunks(cfg: ElasticsearchSettings, index: str, query: str, size: int, first: int = 0) -> list[Chunk]:
    """Chunks of `size` ids of the posts that match the query (the raw posts are read by the workers)."""
    es = elasticsearch_client(cfg)
    try:
        ids = list(matching_ids(es, index, query))
    finally:
        es.close()
    return [Chunk(first + n, "es", index, ids=tuple(ids[i:i + size])) for n, i in enumerate(range(0, len(ids), size))]


class ReadChunk(beam.DoFn):
    """A chunk -> (its number, its RawRecords)."""

    def __init__(self, cfg: ElasticsearchSettings) -> None:
        self.cfg = cfg

    def process(self, chunk: Chunk) -> Iterator[Batch]:
        if chunk.source == "file":
            with open(chunk.name, "rb") as handle:
                handle.seek(chunk.start)
                lines = handle.read(chunk.end - chunk.start).splitlines()
            yield chunk.number, [RawRecord(line, f"file:{chunk.name}") for line in lines if line.strip()]
            return
        es = elasticsearch_client(self.cfg)
        try:
            yield chunk.number, list(raw_posts(es, self.cfg, chunk.name, chunk.ids))
        finally:
            es.close()


class Parse(beam.DoFn):
    """RawRecords -> posts, deletions and dead letters (core.records.parse_post, as in EnrichPosts)."""

    def __init__(self, max_record_bytes: int, max_text_chars: int) -> None:
        self.max_record_bytes, self.max_text_chars = max_record_bytes, max_text_chars

    def process(self, batch: Batch) -> Iterator[Batch]:
        number, records = batch
        yield number, [parse_post(record, self.max_record_bytes, self.max_text_chars) for record in records]


_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _model(step: Any, settings: Settings) -> Any:
    """The step's model, loaded once per worker process: the runner calls setup and teardown for every partition."""
    key = (f"{type(step).__module__}.{type(step).__qualname__}", settings.model_dump_json())
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = step.load_model()
        return _MODELS[key]


class RunStep(beam.DoFn):
    """One enrichment step over a chunk's posts as one batch; if it raises, those posts become dead letters."""

    def __init__(self, step_class: registry.StepClass, settings: Settings) -> None:
        self.step_class, self.settings = step_class, settings

    def setup(self) -> None:
        self._step = self.step_class(self.settings)
        self._loaded = _model(self._step, self.settings)

    def process(self, batch: Batch) -> Iterator[Batch]:
        number, items = batch
        posts = [item for item in items if isinstance(item, dict)]
        if not posts:
            yield batch
            return
        try:
            results = iter(self._step.run_inference(posts, self._loaded))
        except Exception as exc:  # as RunInference's exception handling: the batch's posts become dead letters
            log.warning("enrichment step failed", extra={"fields": {"step": self._step.name, "posts": len(posts),
                                                                     "error": type(exc).__name__}})
            results = _failed_batch_to_dead_letters((posts, exc), self._step.name)
        yield number, [next(results) if isinstance(item, dict) else item for item in items]


def _finish(batch: Batch) -> Batch:
    number, items = batch
    return number, [finish(item) if isinstance(item, dict) else item for item in items]


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """The whole file or nothing: written beside, then renamed over any earlier attempt's."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    os.replace(temporary, path)


class WriteParts(beam.DoFn):
    """A chunk's results -> part files named after the chunk; with an index, its posts (or, in the deletions'
    pass, its deletions) are indexed first and what the index refused becomes dead letters.

    Part files, each only when it has lines: posts-N.jsonl (the posts; into an index, a ledger of the posts it
    acknowledged: id and summary keys), dead-letters-N.jsonl, deletions-N.jsonl (for the deletions' pass).
    Outputs (chunk number, the posts written) for the outputs of pipeline/steps/registry.py (the cases)."""

    def __init__(self, parts: str, cfg: Optional[ElasticsearchSettings], index: Optional[str],
                 deletions_pass: bool) -> None:
        self.parts, self.cfg, self.index, self.deletions_pass = parts, cfg, index, deletions_pass

    def setup(self) -> None:
        self._es = elasticsearch_client(self.cfg) if self.cfg else None
        self._writer = ElasticsearchBulkWriter(self._es, self.cfg, self.index) if self._es else None

    def process(self, batch: Batch) -> Iterator[Batch]:
        number, items = batch
        letters = [item for item in items if isinstance(item, DeadLetter)]
        deletions = [item for item in items if isinstance(item, Deletion)]
        posts = [item for item in items if isinstance(item, dict)]
        parts = Path(self.parts)
        if self._writer is None:
            lines = [to_json_line(post) for post in posts]
        else:
            refused = self._index(deletions if self.deletions_pass else posts)
            letters += [dead_letter("index_rejected", reason, _as_record(item)) for item, reason in refused.values()]
            posts = [post for post in posts if id(post) not in refused]
            lines = [json.dumps({"id": post["id"], "keys": summary_keys(post)}) for post in posts]
        if lines:
            _write_lines(parts / f"posts-{number:06d}.jsonl", lines)
        if deletions and not self.deletions_pass:
            _write_lines(parts / f"deletions-{number:06d}.jsonl", (d.payload().decode("utf-8") for d in deletions))
        if letters:
            _write_lines(parts / f"dead-letters-{number:06d}.jsonl", (letter.to_json() for letter in letters))
        yield number, posts

    def _index(self, items: list[Item]) -> dict[int, tuple[Item, str]]:
        """Index the items; returns the refused ones by identity (one id can come twice in a chunk)."""
        if not items:
            return {}
        rejections = write_patiently(lambda: self._writer.write(items), len(items), time.sleep, 0.0)
        return {id(r.post): (r.post, r.reason) for r in rejections}

    def teardown(self) -> None:
        if self._es is not None:
            self._es.close()


class WriteLetterParts(beam.DoFn):
    """Dead letters of an output (the cases) -> one part file each, named after its content (a rerun rewrites it).
    The runner drops what an output emits at the end of a bundle, so only those emitted earlier arrive here."""

    def __init__(self, parts: str) -> None:
        self.parts = parts

    def process(self, letter: DeadLetter) -> Iterator[str]:
        digest = hashlib.sha256(f"{letter.reason_code}\n{letter.origin}\n".encode() + letter.payload).hexdigest()[:16]
        _write_lines(Path(self.parts) / f"dead-letters-output-{digest}.jsonl", [letter.to_json()])
        yield digest


def _build(pipeline: beam.Pipeline, settings: Settings, chunks: list[Chunk], steps: list[registry.StepClass],
           parts: Path, output: "Target", deletions_pass: bool) -> None:
    """Add the element-wise graph; its last transform depends on every write (the runner computes only that one)."""
    cfg = settings.enrichment
    es = settings.elasticsearch if output.kind == "es" else None
    batches = (pipeline | "Chunks" >> beam.Create(chunks) | "ReadChunk" >> beam.ParDo(ReadChunk(settings.elasticsearch))
               | "Parse" >> beam.ParDo(Parse(cfg.max_record_bytes, cfg.max_text_chars)))
    for step_class in steps:
        batches = batches | step_class.label >> beam.ParDo(RunStep(step_class, settings))
    batches = batches | "Finish" >> beam.Map(_finish)
    written = batches | "WriteParts" >> beam.ParDo(WriteParts(str(parts), es, output.name if es else None,
                                                                  deletions_pass))
    ends = [written | "ChunkDone" >> beam.Map(lambda batch: batch[0])]
    if es and not deletions_pass:
        posts = written | "WrittenPosts" >> beam.FlatMap(lambda batch: batch[1])
        for name, letters in registry.apply_outputs(posts, settings):
            ends.append(letters | f"WriteDeadLetters[{name}]" >> beam.ParDo(WriteLetterParts(str(parts))))
    ends | "AllWritten" >> beam.Flatten() | "Done" >> beam.Map(lambda _: None)


def _run_pass(settings: Settings, beam_args: list[str], chunks: list[Chunk], steps: list[registry.StepClass],
              parts: Path, output: "Target", deletions_pass: bool = False) -> None:
    parts.mkdir(parents=True)
    if not chunks:
        return
    with beam.Pipeline(options=PipelineOptions(dask_options(beam_args))) as pipeline:
        _build(pipeline, settings, chunks, steps, parts, output, deletions_pass)
    client = getattr(pipeline.result, "client", None)
    if client is not None:  # the runner opens a client per run and leaves it open
        client.close()


def _parts(pattern: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(pattern)))


def _lines(parts: list[Path]) -> Iterator[str]:
    for part in parts:
        with open(part, encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle if line.strip())


def _merge(parts: list[Path], path: str) -> Iterator[str]:
    """Concatenate the parts into `path`, written whole and then renamed, passing each line on as it goes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        for line in _lines(parts):
            handle.write(line + "\n")
            yield line
    os.replace(temporary, target)


def run(settings: Settings, job: "BatchJob", inputs: list["Target"], output: "Target",
        dead_target: "Target") -> tuple[dict[str, int], str]:
    """Run the batch job on the DaskRunner; returns (the summary's counters, how they were counted).

    The workers read the inputs and write the parts by path: on a cluster of several machines those paths must be
    on a file system they all share."""
    if any(t.kind == "kafka" for t in inputs) or output.kind == "kafka" or dead_target.kind != "file":
        raise ValueError("on the DaskRunner, triage batch reads JSONL files or an index and writes a JSONL file or "
                         "an index, with dead letters to a JSONL file; run Kafka inputs and outputs on the default "
                         "runner")
    size = settings.enrichment.max_batch_size
    chunks: list[Chunk] = []
    for target in inputs:
        if target.kind == "file":
            paths = sorted(os.path.abspath(p) for p in glob.glob(target.name))
            if not paths:
                raise FileNotFoundError(f"no input file matches {target.name}")
            chunks += file_chunks(paths, size, len(chunks))
        else:
            chunks += index_chunks(settings.elasticsearch, target.name, job.query, size, len(chunks))
    steps = list(job.steps) if job.steps is not None else registry.resolve(settings.enrichment.steps)
    parts = Path(os.path.abspath((output.name if output.kind == "file" else dead_target.name) + ".parts"))
    if parts.exists():
        log.warning("removing the parts of an earlier run that did not finish", extra={"fields": {"parts": str(parts)}})
        shutil.rmtree(parts)
    try:
        _run_pass(settings, job.beam_args, chunks, steps, parts / "posts", output)
        deletion_parts = _parts(parts / "posts" / "deletions-*.jsonl")
        if output.kind == "es":
            deletion_chunks = file_chunks([str(p) for p in deletion_parts], size)
            _run_pass(settings, job.beam_args, deletion_chunks, [], parts / "deletions", output, deletions_pass=True)
        counters, counted = _count(parts, output, dead_target)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return counters, counted


def _count(parts: Path, output: "Target", dead_target: "Target") -> tuple[dict[str, int], str]:
    """Merge the parts into the requested files and count the summary from what they hold."""
    written = _parts(parts / "posts" / "posts-*.jsonl")
    first_pass = _parts(parts / "posts" / "dead-letters-[0-9]*.jsonl")  # of records read, not yet counted
    letters = [*first_pass, *_parts(parts / "posts" / "dead-letters-output-*.jsonl"),
               *_parts(parts / "deletions" / "dead-letters-*.jsonl")]
    if output.kind == "file":
        keyed = ((post["id"], summary_keys(post)) for post in map(json.loads, _merge(written, output.name)))
    else:
        keyed = ((entry["id"], entry["keys"]) for entry in map(json.loads, _lines(written)))
    counters: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    for post_id, keys in keyed:
        ids[post_id] += 1
        counters.update(keys)
    for letter in map(json.loads, _merge(letters, dead_target.name)):
        counters["dead_letters"] += 1
        counters[f"dead_letter.{letter['reason_code']}"] += 1
    counters["duplicate_ids"] = sum(n - 1 for n in ids.values())
    counters["deletions"] = sum(1 for _ in _lines(_parts(parts / "posts" / "deletions-*.jsonl")))
    posts = sum(ids.values())
    counters["records_in"] = posts + counters["deletions"] + sum(1 for _ in _lines(first_pass))
    where = output.name if output.kind == "file" else f"the ledger of the posts {output.name} acknowledged"
    counted = (f"from what was written ({posts} posts in {where}, {counters['dead_letters']} dead letters in "
               f"{dead_target.name}): the DaskRunner collects no metrics")
    return {key: value for key, value in counters.items() if value}, counted
