"""What analysts and team leads ask of the posts index: trends, service level, what angers customers.

Shared by `triage query`, the notebooks and the tests, so that every place shows the same numbers.
Everything reads the redacted posts index (read alias): aggregations and `text_redacted` only.
Posts their authors deleted still count in trends and in the answered figures (what customers said and
what the team did do not change afterwards), but not as unanswered or overdue: nobody can answer them.
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Optional

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from apps.desk import NOT_DELETED, OPEN_STATUSES
from apps.query import FACETS, QueryFilters, build_query
from core.terminal import printable
from core.timestamps import utc_iso

_WORD = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


def over_time(es: Elasticsearch, index: str, filters: QueryFilters, by: str, interval: str = "day") -> dict[str, dict[str, int]]:
    """Posts per interval, split by one facet (source, language, sentiment, intent, topic, queue, ...)."""
    response = es.search(index=index, query=build_query(filters), size=0, aggs={"t": {
        "date_histogram": {"field": "created_at", "calendar_interval": interval, "min_doc_count": 1},
        "aggs": {"by": {"terms": {"field": FACETS[by], "size": 50}}}}})
    return {bucket["key_as_string"][:10 if interval != "hour" else 13]:
            {b["key"]: b["doc_count"] for b in bucket["by"]["buckets"]}
            for bucket in response["aggregations"]["t"]["buckets"]}


def shares(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """The same table as fractions of each interval's total (e.g. sentiment share per day)."""
    return {k: {label: round(n / sum(row.values()), 4) for label, n in row.items()} for k, row in counts.items()}


def _sla_aggs(now: str) -> dict[str, Any]:
    return {
        "unanswered": {"filter": {"terms": {"agent.status": list(OPEN_STATUSES)}},
                       "aggs": {"not_deleted": {"filter": NOT_DELETED}}},
        "overdue": {"filter": {"bool": {"filter": [{"terms": {"agent.status": list(OPEN_STATUSES)}},
                                                   {"range": {"triage.due_at": {"lt": now}}}, NOT_DELETED]}}},
        "answered": {"filter": {"exists": {"field": "agent.answered_at"}}},
        "within_sla": {"filter": {"term": {"agent.within_sla": True}}},
    }


def _sla_figures(aggs: dict[str, Any], total: int) -> dict[str, Any]:
    answered, within = aggs["answered"]["doc_count"], aggs["within_sla"]["doc_count"]
    return {"posts": total, "unanswered": aggs["unanswered"]["not_deleted"]["doc_count"],
            "overdue": aggs["overdue"]["doc_count"],
            "answered": answered, "answered_within_sla": within,
            "sla_share": round(within / answered, 4) if answered else None}


def service_level(es: Elasticsearch, index: str, filters: QueryFilters, now: Optional[datetime] = None) -> dict[str, Any]:
    """Unanswered, overdue, answered and the share answered within SLA: overall and per queue.

    `sla_share` is answered-within-deadline over answered: the figure a care team is judged by.
    """
    instant = utc_iso(now or datetime.now(timezone.utc))
    aggs = _sla_aggs(instant)
    response = es.search(index=index, query=build_query(filters), size=0, track_total_hits=True, aggs={
        **aggs, "queue": {"terms": {"field": "triage.queue", "size": 50}, "aggs": aggs}})
    result = response["aggregations"]
    overall = _sla_figures(result, response["hits"]["total"]["value"])
    overall["by_queue"] = {b["key"]: _sla_figures(b, b["doc_count"]) for b in result["queue"]["buckets"]}
    return overall


def _stop_words() -> set[str]:
    from spacy.lang.de.stop_words import STOP_WORDS as GERMAN
    from spacy.lang.en.stop_words import STOP_WORDS as ENGLISH
    return {w.casefold() for w in GERMAN | ENGLISH}


def top_terms(es: Elasticsearch, index: str, filters: QueryFilters, size: int = 20, sample: int = 5000) -> list[tuple[str, int]]:
    """The most frequent words of matching posts (default: negative ones), without stop words or placeholders.

    Counted in Python over up to `sample` redacted texts: Elasticsearch's significant_terms needs
    field data on text fields, which is expensive, and not every compatible server has it.
    """
    stop, counts = _stop_words(), Counter()
    hits = scan(es, index=index, query={"query": build_query(filters), "_source": ["text_redacted"]}, size=500)
    for i, hit in enumerate(hits):
        if i >= sample:
            break
        text = _PLACEHOLDER.sub(" ", hit["_source"].get("text_redacted", ""))
        words = {w.casefold() for w in _WORD.findall(text)}  # once per post: how many posts mention it
        counts.update(w for w in words if w not in stop and not w.startswith(("http", "www")))
    return counts.most_common(size)


def format_service_level(figures: dict[str, Any]) -> str:
    def line(name: str, f: dict[str, Any]) -> str:
        share = f"{f['sla_share']:.0%}" if f["sla_share"] is not None else "-"
        return (f"  {printable(name):<12} {f['posts']:>7} {f['unanswered']:>10} {f['overdue']:>8} {f['answered']:>9} "
                f"{f['answered_within_sla']:>11} {share:>9}")
    lines = [f"  {'queue':<12} {'posts':>7} {'unanswered':>10} {'overdue':>8} {'answered':>9} {'within SLA':>11} "
             f"{'SLA share':>9}", line("all", figures)]
    lines += [line(name, f) for name, f in figures["by_queue"].items()]
    return "\n".join(lines)
