"""EnrichPosts: raw records in, enriched posts and dead letters out.

The one code path shared by `triage batch` and `triage stream`: sources only produce RawRecords and
sinks only consume enriched posts and dead letters, so every way of running the product enriches
identically.

Deletion records (core.records.Deletion) leave right after parsing ("SplitDeletions"): there is nothing
to enrich in them, and the sink applies them to the post's documents (pipeline/io/elasticsearch.py).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

import schemas
from core.config import Settings
from core.records import DeadLetter, Deletion, RawRecord, dead_letter, parse_post, post_payload, utc_now
from pipeline.steps import registry
from pipeline.steps.base import Post

SUMMARY_NAMESPACE = "triage.summary"
DEAD_LETTER_TAG = "dead_letters"
DELETIONS_TAG = "deletions"


class ParsePosts(beam.DoFn):
    """Decode and validate raw records; anything that is not a valid Post or Deletion becomes a dead letter."""

    def __init__(self, max_record_bytes: int, max_text_chars: int) -> None:
        self.max_record_bytes = max_record_bytes
        self.max_text_chars = max_text_chars

    def process(self, record: RawRecord) -> Iterator[Any]:
        Metrics.counter(SUMMARY_NAMESPACE, "records_in").inc()
        parsed = parse_post(record, self.max_record_bytes, self.max_text_chars)
        if isinstance(parsed, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, parsed)
        else:
            yield parsed


def split_deletions(parsed: Post | Deletion) -> Iterator[Any]:
    """Posts go on to the enrichment steps; deletions, tagged, straight to the sink (and the run summary)."""
    if isinstance(parsed, Deletion):
        Metrics.counter(SUMMARY_NAMESPACE, "deletions").inc()
        yield beam.pvalue.TaggedOutput(DELETIONS_TAG, parsed)
    else:
        yield parsed


def _failed_batch_to_dead_letters(failure: tuple[list[Post], Any], step: str) -> Iterator[DeadLetter]:
    """RunInference hands over (batch, (exception type, repr, traceback)); the reason names the type only."""
    batch, error = failure
    kind = error[0].__name__ if isinstance(error, tuple) and isinstance(error[0], type) else type(error).__name__
    for post in batch:
        record = RawRecord(post_payload(post), f"post:{post['id']}")
        yield dead_letter("enrichment_failed", f"step {step} failed: {kind}", record)


def finish(post: Post) -> Post:
    """Stamp what every enriched post carries, and count it for the run summary."""
    enriched = {**post, "schema_version": schemas.SCHEMA_VERSION, "processed_at": utc_now()}
    for key in summary_keys(post):
        Metrics.counter(SUMMARY_NAMESPACE, key).inc()
    return enriched


def summary_keys(post: Post) -> list[str]:
    """The run-summary counters one enriched post adds: runner metrics count them in `finish`, and a runner
    without metrics (pipeline/elementwise.py) counts them from the posts it wrote."""
    keys = ["enriched", f"source.{post['source']}"]
    if "language" in post:
        keys.append(f"language.{post['language']['code']}")
    for field in ("sentiment", "intent", "relevance", "topic"):
        if post.get(field, {}).get("label"):
            keys.append(f"{field}.{post[field]['label']}")
    if "triage" in post and not post["triage"].get("brand"):  # the brand's own posts are not routed
        keys += [f"queue.{post['triage']['queue']}", f"priority.{post['triage']['priority']}"]
    if post.get("pii", {}).get("found"):
        keys += ["pii_found", *(f"pii.{pii_type}" for pii_type in post["pii"]["types"])]
    return keys


def count_dead_letter(letter: DeadLetter) -> DeadLetter:
    Metrics.counter(SUMMARY_NAMESPACE, "dead_letters").inc()
    Metrics.counter(SUMMARY_NAMESPACE, f"dead_letter.{letter.reason_code}").inc()
    return letter


class EnrichPosts(beam.PTransform):
    """PCollection[RawRecord] -> {'enriched': PCollection[Post], 'deletions': PCollection[Deletion],
    'dead_letters': [PCollection[DeadLetter], ...]}.

    Dead letters come as one PCollection per place they arise, unflattened: the streaming job must
    keep its graph fused (a Flatten would wait for the unbounded source to finish), the batch job
    flattens them itself.
    """

    def __init__(self, settings: Settings, steps: Optional[Sequence[registry.StepClass]] = None) -> None:
        """`steps` (step classes, in order) replaces enrichment.steps and the registry: tests pass the fakes of
        pipeline/testing.py."""
        super().__init__()
        if steps is None:
            self.steps = registry.resolve(settings.enrichment.steps)  # fails at start, with the reason
            self.names = list(settings.enrichment.steps)
        else:
            self.steps, self.names = list(steps), [step.name for step in steps]
        self.settings = settings

    def expand(self, records: beam.PCollection) -> dict[str, beam.PCollection]:
        cfg = self.settings.enrichment
        parsed = records | "ParseAndValidate" >> beam.ParDo(
            ParsePosts(cfg.max_record_bytes, cfg.max_text_chars)).with_outputs(DEAD_LETTER_TAG, main="posts")
        split = parsed.posts | "SplitDeletions" >> beam.FlatMap(split_deletions).with_outputs(DELETIONS_TAG,
                                                                                                main="posts")
        posts = split.posts
        dead_letters = [parsed[DEAD_LETTER_TAG] | "CountInvalid" >> beam.Map(count_dead_letter)]
        for name, step_class in zip(self.names, self.steps):
            step = step_class(self.settings)
            posts, failures = posts | step.label >> RunInference(step).with_exception_handling()
            dead_letters.append(failures.failed_inferences
                                | f"{step.label}FailuresToDeadLetters" >> beam.FlatMap(_failed_batch_to_dead_letters, name)
                                | f"Count{step.label}Failures" >> beam.Map(count_dead_letter))
        enriched = posts | "Finish" >> beam.Map(finish)
        return {"enriched": enriched, "deletions": split[DELETIONS_TAG], "dead_letters": dead_letters}
