"""`triage batch`: enrich a bounded set of posts with an Apache Beam pipeline.

Inputs: JSONL files (globs), a Kafka topic over an offset or time range, or an index re-read with a
query. Outputs: a JSONL file, Elasticsearch (the write alias) or a Kafka topic. Dead letters go to
a JSONL file or the dead-letter topic. FnApiRunner runs it in-process by default; any Beam runner
can be named with --runner and its own options. On Beam's DaskRunner, whose grouping, multi-output ParDos,
bundle ends and metrics cannot be trusted (pipeline/elementwise.py says how it fails), the job runs as
that module's element-wise graph instead, counted from what it wrote.
"""
from __future__ import annotations

import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from core.config import Settings
from pipeline import elementwise
from pipeline.enrich import SUMMARY_NAMESPACE, EnrichPosts, count_dead_letter
from pipeline.io import sinks, sources
from pipeline.steps import registry
from pipeline.io.write import REJECTED_TAG, WRITTEN_TAG, WriteToElasticsearch, WriteToKafka
from core.records import DeadLetter, RawRecord


@dataclass(frozen=True)
class Target:
    """Where records come from or go: kind is 'file', 'es' or 'kafka'; name is a path, index or topic."""
    kind: str
    name: str

    @classmethod
    def parse(cls, spec: str, default_topic: str, default_index: str) -> "Target":
        if spec == "kafka" or spec.startswith("kafka:"):
            return cls("kafka", spec.partition(":")[2] or default_topic)
        if spec == "es" or spec.startswith("es:"):
            return cls("es", spec.partition(":")[2] or default_index)
        return cls("file", spec)


@dataclass
class BatchJob:
    inputs: list[str]
    output: str
    dead_letters: Optional[str] = None
    kafka_from: Optional[str] = None  # offset, 'earliest', 'latest' or ISO time
    kafka_to: Optional[str] = None
    query: str = "*"
    max_errors: Optional[int] = None
    beam_args: list[str] = field(default_factory=list)
    steps: Optional[list[registry.StepClass]] = None  # instead of enrichment.steps: `triage bench web` uses cheap fakes


METRICS = "from the runner's metrics"


@dataclass
class Summary:
    counters: dict[str, int]
    seconds: float
    output: Target
    dead_letters: Target
    counted_from: str = METRICS  # a runner without metrics (pipeline/elementwise.py) counts what was written

    def count(self, name: str) -> int:
        return self.counters.get(name, 0)

    def breakdown(self, prefix: str) -> dict[str, int]:
        return dict(sorted(((k[len(prefix) + 1:], v) for k, v in self.counters.items() if k.startswith(prefix + ".")),
                           key=lambda kv: -kv[1]))


class ReportProgress(beam.DoFn):
    """Shows records read and records/s: a bar on a terminal, a line every 10 s otherwise."""

    def __init__(self, total: Optional[int]) -> None:
        self.total = total

    def setup(self) -> None:
        from tqdm import tqdm
        tty = sys.stderr.isatty()
        self._bar = tqdm(total=self.total, unit=" posts", file=sys.stderr, mininterval=0.5 if tty else 10,
                         dynamic_ncols=True)

    def process(self, record: RawRecord) -> Iterator[RawRecord]:
        self._bar.update(1)
        yield record

    def teardown(self) -> None:
        self._bar.close()


def _count_lines(patterns: list[str]) -> Optional[int]:
    """Non-blank lines in the input files, for a progress bar with an ETA; None if not cheap to know."""
    total = 0
    for pattern in patterns:
        paths = glob.glob(pattern)
        if not paths:
            raise FileNotFoundError(f"no input file matches {pattern}")
        for path in paths:
            with open(path, "rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def default_dead_letters(output: Target) -> str:
    if output.kind == "file":
        path = Path(output.name)
        return str(path.with_name(path.name.removesuffix(".jsonl") + ".dead-letters.jsonl"))
    return "kafka" if output.kind == "kafka" else "dead-letters.jsonl"


def _write_posts(posts: beam.PCollection, deletions: beam.PCollection, target: Target,
                 settings: Settings) -> list[beam.PCollection]:
    """Writes enriched posts (and deletions, to an index); returns the dead letters the writes produced.

    Into an index, the outputs (pipeline/steps/registry.py: the cases) follow the posts the index acknowledged.

    Deletions are applied after every post of the run was written (a side input that exists only then): a
    deletion and its post in one run end as a deleted post whatever their order in the input, where a
    deletion applied first would find nothing to mark. Files and topics get the enriched posts only; the
    summary counts the deletions.
    """
    if target.kind == "file":
        sinks.write_jsonl(posts | "PostsToJson" >> beam.Map(sinks.to_json_line), target.name, "WritePostsJsonl")
        return []
    if target.kind == "es":
        written = posts | "IndexInElasticsearch" >> WriteToElasticsearch(settings.elasticsearch, target.name)
        indexed = written[WRITTEN_TAG] | "CountIndexed" >> beam.combiners.Count.Globally()
        after_posts = deletions | "AfterThePosts" >> beam.Map(lambda deletion, _: deletion,
                                                              beam.pvalue.AsSingleton(indexed))
        deleted = after_posts | "MarkDeletedInElasticsearch" >> WriteToElasticsearch(settings.elasticsearch,
                                                                                       target.name)
        outputs = registry.apply_outputs(written[WRITTEN_TAG], settings)  # the cases, as the stream does
        return [written[REJECTED_TAG] | "CountRejected" >> beam.Map(count_dead_letter),
                deleted[REJECTED_TAG] | "CountRejectedDeletions" >> beam.Map(count_dead_letter),
                *(letters | f"CountRejected[{name}]" >> beam.Map(count_dead_letter) for name, letters in outputs)]
    posts | "ProducePosts" >> WriteToKafka(settings.kafka, target.name, kind="posts")
    return []


def _write_dead_letters(letters: beam.PCollection, target: Target, settings: Settings) -> None:
    if target.kind == "file":
        sinks.write_jsonl(letters | "DeadLettersToJson" >> beam.Map(DeadLetter.to_json), target.name,
                          "WriteDeadLettersJsonl")
    elif target.kind == "kafka":
        letters | "ProduceDeadLetters" >> WriteToKafka(settings.kafka, target.name, kind="dead_letters")
    else:
        raise ValueError("dead letters go to a JSONL file or a Kafka topic, not to an index")


def _count_extra_versions(id_count: tuple[str, int]) -> None:
    if id_count[1] > 1:
        Metrics.counter(SUMMARY_NAMESPACE, "duplicate_ids").inc(id_count[1] - 1)


def _count_duplicate_ids(posts: beam.PCollection) -> None:
    """A post id that comes more than once ends as one document (the version written last, whole);
    the summary says how many extra versions there were, so nobody wonders why counts differ."""
    (posts | "PostIds" >> beam.Map(lambda post: (post["id"], 1)) | "CountPerId" >> beam.CombinePerKey(sum)
     | "CountDuplicateIds" >> beam.Map(_count_extra_versions))


def targets(settings: Settings, job: BatchJob) -> tuple[Target, Target]:
    """Where the job writes: (output, dead-letter) targets."""
    topics, es = settings.kafka.topics, settings.elasticsearch
    output = Target.parse(job.output, topics.enriched, es.write_alias)
    return output, Target.parse(job.dead_letters or default_dead_letters(output), topics.dead_letter, es.write_alias)


def build(pipeline: beam.Pipeline, settings: Settings, job: BatchJob) -> tuple[Target, Target]:
    """Add the whole batch graph to `pipeline`; returns (output, dead-letter) targets."""
    topics, es = settings.kafka.topics, settings.elasticsearch
    output, dead_target = targets(settings, job)
    inputs = [Target.parse(spec, topics.raw, es.read_alias) for spec in job.inputs]
    files = [t.name for t in inputs if t.kind == "file"]
    local = files and len(files) == len(inputs) and not any("://" in f for f in files)
    total = _count_lines(files) if local else None  # also fails early, and clearly, on a missing file
    reads = []
    if files:
        reads.append(pipeline | "ReadJsonl" >> sources.ReadJsonlFiles(files))
    for i, target in enumerate(t for t in inputs if t.kind == "kafka"):
        reads.append(pipeline | f"ReadKafka[{i}]" >> sources.ReadKafkaRange(settings.kafka, target.name,
                                                                             job.kafka_from, job.kafka_to))
    for i, target in enumerate(t for t in inputs if t.kind == "es"):
        reads.append(pipeline | f"ReadIndex[{i}]" >> sources.ReadIndex(es, target.name, job.query))
    records = reads[0] if len(reads) == 1 else reads | "MergeInputs" >> beam.Flatten()
    records = records | "ReportProgress" >> beam.ParDo(ReportProgress(total))
    enriched = records | "Enrich" >> EnrichPosts(settings, steps=job.steps)
    _count_duplicate_ids(enriched["enriched"])
    rejected = _write_posts(enriched["enriched"], enriched["deletions"], output, settings)
    dead = [*enriched["dead_letters"], *rejected]
    _write_dead_letters(dead | "AllDeadLetters" >> beam.Flatten(), dead_target, settings)
    return output, dead_target


def run(settings: Settings, job: BatchJob) -> Summary:
    if not job.inputs:
        raise ValueError("give at least one --input")
    args = list(job.beam_args)
    if not any(arg.startswith("--runner") for arg in args):
        args.append("--runner=FnApiRunner")
    started = time.monotonic()
    if elementwise.is_dask(args):
        output, dead_target = targets(settings, job)
        inputs = [Target.parse(spec, settings.kafka.topics.raw, settings.elasticsearch.read_alias) for spec in job.inputs]
        counters, counted_from = elementwise.run(settings, job, inputs, output, dead_target)
        return Summary(counters, time.monotonic() - started, output, dead_target, counted_from)
    files = [target.name for target in targets(settings, job) if target.kind == "file"]
    with sinks.remove_temp_dirs_on_failure(files), beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        output, dead_target = build(pipeline, settings, job)
    result = pipeline.result
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(SUMMARY_NAMESPACE))["counters"]
    }
    return Summary(counters, time.monotonic() - started, output, dead_target)
