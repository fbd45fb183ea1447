"""The summary printed after a batch run: what came in, what came out, what was found."""
from __future__ import annotations

from pipeline.batch import METRICS, Summary
from core.terminal import printable


def _table(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return []
    return [f"  {title}:"] + [f"    {printable(key):<22} {value:>8}" for key, value in counts.items()]


def format_batch_summary(summary: Summary) -> str:
    records, enriched, dead = summary.count("records_in"), summary.count("enriched"), summary.count("dead_letters")
    rate = records / summary.seconds if summary.seconds else 0.0
    destination = summary.output.name if summary.output.kind == "file" else f"{summary.output.kind}:{summary.output.name}"
    lines = [
        f"Enriched {enriched} of {records} records in {summary.seconds:.1f} s ({rate:.0f} records/s) -> "
        f"{printable(destination)}",
        f"  personal data found in {summary.count('pii_found')} posts",
    ]
    if summary.count("duplicate_ids"):
        lines.append(f"  duplicate post ids: {summary.count('duplicate_ids')} extra versions "
                     "(each id is stored once, as one whole version)")
    if summary.count("deletions"):
        lines.append(f"  deletions: {summary.count('deletions')} posts deleted at their source "
                     + ("marked in the index" if summary.output.kind == "es" else "(only an index applies them)"))
    lines += _table("by source", summary.breakdown("source"))
    lines += _table("by language", summary.breakdown("language"))
    lines += _table("personal data by type", summary.breakdown("pii"))
    for field in ("sentiment", "intent", "relevance", "topic", "queue", "priority"):
        lines += _table(f"by {field}", summary.breakdown(field))
    dead_where = summary.dead_letters.name if summary.dead_letters.kind == "file" else f"kafka:{summary.dead_letters.name}"
    lines.append(f"  dead letters: {dead}" + (f" -> {printable(dead_where)}" if dead else ""))
    lines += _table("dead letters by reason", summary.breakdown("dead_letter"))
    if summary.counted_from != METRICS:
        lines.append(f"  counted {printable(summary.counted_from)}")
    return "\n".join(lines)
