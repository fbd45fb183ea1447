"""Enrichment steps by name, found through entry points, and the check that a configured order works.

Like spaCy's registry, the product's own steps are registered the same way a user's package
registers one: an entry point in the group `triage.steps` (name = the name `enrichment.steps`
uses, value = `module:Class` of an EnrichmentStep). A package that declares one adds a step
without editing the product; setup.py declares the built-in four.

Each step declares the post fields it requires and provides. The configured order is checked once
at start, because a step that reads a field nobody has filled yet does not fail: `steps: [routing,
language]` used to route every post as if it had no intent.

Outputs are found the same way (group `triage.outputs`): PTransforms that batch and stream apply to the
posts the index acknowledged, in the same bundle, so that in the stream the offsets are committed only after
their writes too. The product's own is `cases` (triage/case_writer.py: conversations), which the pipeline
layer could not import directly. An output is built as `Output(settings, wait=..., max_outage_s=...)` (how to
wait while Elasticsearch is unavailable, as for the index write) and returns a PCollection of DeadLetters.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Optional

import apache_beam as beam

from core.config import ConfigError, Settings
from core.records import POST_FIELDS
from pipeline.steps.base import EnrichmentStep

ENTRY_POINT_GROUP = "triage.steps"
OUTPUT_GROUP = "triage.outputs"
StepClass = type[EnrichmentStep[Any]]


def registered() -> dict[str, EntryPoint]:
    """Every installed step, by name (not yet imported)."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def _load(point: EntryPoint) -> StepClass:
    step = point.load()
    if not (isinstance(step, type) and issubclass(step, EnrichmentStep)):
        raise ConfigError(f"enrichment step {point.name} ({point.value}) is not an EnrichmentStep")
    return step


def _missing_field_error(name: str, field: str, later: dict[str, str], known: dict[str, StepClass]) -> str:
    if field in later:
        return f"{name} requires {field}, provided by {later[field]}, which comes after it"
    providers = sorted(n for n, step in known.items() if field in step.provides)
    if providers:
        return f"{name} requires {field}, provided by {' or '.join(providers)}, which is not in enrichment.steps"
    return f"{name} requires {field}, which no installed step provides"


def resolve(names: list[str]) -> list[StepClass]:
    """The step classes for `enrichment.steps`, in order; a ConfigError says what is wrong with the order."""
    points = registered()
    unknown = [name for name in names if name not in points]
    if unknown:
        hint = "" if points else " (no step is registered: install the product with `pip install -e .`)"
        raise ConfigError(f"enrichment.steps: unknown step(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(points))}{hint}")
    steps = [_load(points[name]) for name in names]
    known = {name: _load(point) for name, point in points.items()}
    provided = set(POST_FIELDS)
    for i, (name, step) in enumerate(zip(names, steps)):
        later = {field: n for n, s in reversed(list(zip(names[i + 1:], steps[i + 1:]))) for field in s.provides}
        for field in step.requires:
            if field not in provided:
                raise ConfigError("enrichment.steps: " + _missing_field_error(name, field, later, known))
        provided |= set(step.provides)
    return steps


def outputs() -> list[tuple[str, type[beam.PTransform]]]:
    """Every installed output (name, class), in name order, so every run applies them alike."""
    found = []
    for point in sorted(entry_points(group=OUTPUT_GROUP), key=lambda p: p.name):
        output = point.load()
        if not (isinstance(output, type) and issubclass(output, beam.PTransform)):
            raise ConfigError(f"output {point.name} ({point.value}) is not a Beam PTransform")
        found.append((point.name, output))
    return found


def apply_outputs(posts: beam.PCollection, settings: Settings, wait: Optional[Callable[[float], None]] = None,
                  max_outage_s: float = 0.0) -> list[tuple[str, beam.PCollection]]:
    """Apply every output to the acknowledged posts; returns (name, its dead letters) per output."""
    return [(name, posts | f"Output[{name}]" >> output(settings, wait=wait, max_outage_s=max_outage_s))
            for name, output in outputs()]
