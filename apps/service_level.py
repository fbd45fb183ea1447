"""What the care team is judged by: service-level figures of cases (conversations), not of single posts.

Read from the cases index (`elasticsearch.cases_read_alias`, one document per case, written by the case
writer with `answered_at` as soon as a brand post appears in the thread, whatever tool the agent used).
Shared by `triage query --sla`, the service-level notebook, the Prometheus exporter (`triage metrics`) and
the tests, so that every place shows the same numbers. Overall, per queue, per channel (source) and per
day (UTC day of the case's first post), at an instant `now`:

- `open`: cases waiting for the brand (status new or claimed, a re-opened case too); `overdue`: open past
  their `due_at` (the current round's deadline).
- `answered`: cases with a first response (`answered_at`; the case document keeps the first response when the
  customer writes again, triage/cases.py), and the figures below are of that first response:
- `unanswered_by_due`: of the cases whose first answer by the due time is decided (answered with a due time, or
  unanswered and past due), those without an answer by then; the rate is the complaint that started this product.
- `unanswered_24h`: of the cases that were answered or have waited 24 h, those not answered within 24 h.
- `first_response_p50_s` / `_p90_s`: first-response time of answered cases, exact nearest-rank
  percentiles (numpy's `inverted_cdf`: a value some case really had) computed here over a scroll of
  only the answered cases' four fields. Why not the `percentiles` aggregation: it is approximate
  (t-digest) and the local stand-in does not have it; a care team checking one week's p90 by hand
  must get the same number.
- `within_sla_share`: answered within their due time over answered cases that had one.
- `answered_via`: answers seen on the channel (`channel`), sent from the product (`product`), by the helpdesk.
Cases closed without an answer (spam, nothing to say) count as cases but in none of the rates; cases of brand
posts only (`customer_posts` 0: no customer asked anything) are not counted at all.
Every count is an Elasticsearch aggregation (filter aggregations under terms and date_histogram).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional

import numpy
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.desk import OPEN_STATUSES
from apps.query import QueryFilters, build_query
from core.terminal import printable
from core.timestamps import utc_iso

log = logging.getLogger(__name__)

# The cases index's fields for the filters `triage query` takes (labels are plain keywords there).
CASE_FACETS = {name: name for name in ("source", "language", "sentiment", "intent", "topic", "queue", "priority",
                                       "status")}
OPEN = {"terms": {"status": list(OPEN_STATUSES)}}
ANSWERED = {"exists": {"field": "answered_at"}}
CUSTOMER_CASES = {"range": {"customer_posts": {"gt": 0}}}
DAY_S = 24 * 3600
BREAKDOWNS = ("by_queue", "by_channel", "by_day")
VIAS = ("channel", "product", "helpdesk")


def case_query(filters: QueryFilters) -> dict[str, Any]:
    """The filters over the cases index (time bounds on the first post). Cases hold no text and no personal
    data, so a full-text or personal-data filter is refused rather than silently ignored."""
    if filters.text or filters.pii is not None or filters.pii_type:
        raise ValueError("--sla counts cases, which hold no text and no personal data: "
                         "drop the search words, --pii/--no-pii and --pii-type")
    query = build_query(filters, CASE_FACETS, "first_post_at")
    query["bool"]["filter"].append(CUSTOMER_CASES)
    return query


def _open_aggs(now: datetime) -> dict[str, Any]:
    overdue = {"bool": {"filter": [OPEN, {"range": {"due_at": {"lt": utc_iso(now)}}}]}}
    return {"open": {"filter": OPEN}, "overdue": {"filter": overdue}}


def _figure_aggs(now: datetime) -> dict[str, Any]:
    def unanswered(since: dict[str, Any]) -> dict[str, Any]:
        return {"filter": {"bool": {"filter": [OPEN, {"range": since}], "must_not": [ANSWERED]}}}
    return {**_open_aggs(now),
            "late_unanswered": unanswered({"due_at": {"lt": utc_iso(now)}}),
            "open_a_day": unanswered({"opened_at": {"lte": utc_iso(now - timedelta(seconds=DAY_S))}}),
            "answered": {"filter": ANSWERED, "aggs": {
                "via": {"terms": {"field": "answered_via", "size": 10}},
                "with_due": {"filter": {"exists": {"field": "within_sla"}}},
                "within_sla": {"filter": {"term": {"within_sla": True}}},
                "within_24h": {"filter": {"range": {"first_response_seconds": {"lte": DAY_S}}}}}}}


def _rate(part: int, whole: int) -> Optional[float]:
    return round(part / whole, 4) if whole else None


def _figures(bucket: dict[str, Any], cases: int, response_times: list[float]) -> dict[str, Any]:
    answered = bucket["answered"]
    within, with_due = answered["within_sla"]["doc_count"], answered["with_due"]["doc_count"]
    decided_by_due = bucket["late_unanswered"]["doc_count"] + with_due
    decided_24h = bucket["open_a_day"]["doc_count"] + answered["doc_count"]
    p50, p90 = (numpy.percentile(response_times, [50, 90], method="inverted_cdf").tolist() if response_times
                else (None, None))
    via = {b["key"]: b["doc_count"] for b in answered["via"]["buckets"]}
    return {"cases": cases, "open": bucket["open"]["doc_count"], "overdue": bucket["overdue"]["doc_count"],
            "answered": answered["doc_count"],
            "unanswered_by_due": {"of": decided_by_due, "count": decided_by_due - within,
                                  "rate": _rate(decided_by_due - within, decided_by_due)},
            "unanswered_24h": {"of": decided_24h, "count": decided_24h - answered["within_24h"]["doc_count"],
                               "rate": _rate(decided_24h - answered["within_24h"]["doc_count"], decided_24h)},
            "first_response_p50_s": p50, "first_response_p90_s": p90,
            "within_sla_share": _rate(within, with_due),
            "answered_via": {**{name: 0 for name in VIAS}, **via}}


def _response_times(es: Elasticsearch, index: str, query: dict[str, Any]) -> dict[tuple[str, str], list[float]]:
    """First-response times of the answered matching cases, grouped as the aggregations group them."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    answered = {"bool": {"filter": [query, ANSWERED, {"exists": {"field": "first_response_seconds"}}]}}
    for hit in scan(es, index=index, size=1000, query={"query": answered, "_source": [
            "queue", "source", "first_post_at", "first_response_seconds"]}):
        case = hit["_source"]
        seconds = float(case["first_response_seconds"])
        for key in (("all", ""), ("by_queue", case.get("queue")), ("by_channel", case.get("source")),
                    ("by_day", str(case.get("first_post_at") or "")[:10])):
            times[key].append(seconds)  # type: ignore[index]
    return times


def service_level(es: Elasticsearch, index: str, filters: QueryFilters,
                  now: Optional[datetime] = None) -> dict[str, Any]:
    """The figures overall and `by_queue`, `by_channel`, `by_day`, as of `now` (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    query, aggs = case_query(filters), _figure_aggs(now)
    response = es.search(index=index, query=query, size=0, track_total_hits=True, aggs={
        **aggs,
        "by_queue": {"terms": {"field": "queue", "size": 100}, "aggs": aggs},
        "by_channel": {"terms": {"field": "source", "size": 100}, "aggs": aggs},
        "by_day": {"date_histogram": {"field": "first_post_at", "calendar_interval": "day", "min_doc_count": 1},
                   "aggs": aggs}})
    result, times = response["aggregations"], _response_times(es, index, query)
    figures = {"as_of": utc_iso(now),
               **_figures(result, response["hits"]["total"]["value"], times[("all", "")])}
    for name in BREAKDOWNS:
        figures[name] = {}
        for bucket in result[name]["buckets"]:
            key = bucket["key_as_string"][:10] if name == "by_day" else bucket["key"]
            figures[name][key] = _figures(bucket, bucket["doc_count"], times[(name, key)])
    return figures


def open_and_overdue(es: Elasticsearch, index: str, now: Optional[datetime] = None) -> dict[str, dict[str, int]]:
    """Open and overdue cases per queue: what the exporter and the overdue alert need, in one small request."""
    aggs = _open_aggs(now or datetime.now(timezone.utc))
    response = es.search(index=index, size=0, track_total_hits=False,
                         aggs={"queue": {"terms": {"field": "queue", "size": 200}, "aggs": aggs}})
    return {b["key"]: {name: b[name]["doc_count"] for name in aggs} for b in response["aggregations"]["queue"]["buckets"]}


class CaseGauges(Collector):
    """`triage_cases_open{queue}` and `triage_cases_overdue{queue}`, counted from the cases index at each scrape.

    Collected on scrape (the usual exporter pattern) rather than refreshed on a timer: Prometheus sets the
    pace and never reads a stale count. `triage_cases_up` is 0 when the index could not be read, so an
    alerting rule can tell "no open cases" from "no answer"."""

    def __init__(self, es: Elasticsearch, index: str) -> None:
        self.es, self.index = es, index

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("triage_cases_up", "1 when the cases index answered this scrape")
        try:
            counts = open_and_overdue(self.es, self.index)
        except Exception as exc:  # any failure of the read: report it as a metric, keep serving
            log.warning("cases index unreadable", extra={"fields": {"index": self.index, "error": type(exc).__name__}})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, help_text in (("open", "Cases waiting for the brand's answer (status new or claimed)"),
                                ("overdue", "Open cases past their due time")):
            gauge = GaugeMetricFamily(f"triage_cases_{name}", help_text, labels=["queue"])
            for queue, figures in sorted(counts.items()):
                gauge.add_metric([queue], figures[name])
            yield gauge


def duration_text(seconds: Optional[float]) -> str:
    """A duration for people: 40s, 25m, 3h05m, 17d04h."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes < 48 * 60 else f"{minutes // 1440}d{minutes % 1440 // 60:02d}h"


def _share(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0%}"


def format_service_level(figures: dict[str, Any]) -> str:
    """A table for people: one line overall, then per queue, channel and day (names through printable())."""
    def line(name: str, f: dict[str, Any]) -> str:
        via = f["answered_via"]
        return (f"  {printable(name):<14} {f['cases']:>6} {f['open']:>5} {f['overdue']:>7} "
                f"{_share(f['unanswered_by_due']['rate']):>9} {_share(f['unanswered_24h']['rate']):>9} "
                f"{duration_text(f['first_response_p50_s']):>7} {duration_text(f['first_response_p90_s']):>7} "
                f"{_share(f['within_sla_share']):>6} {via.get('channel', 0):>7} {via.get('product', 0):>7} "
                f"{via.get('helpdesk', 0):>8}")
    header = (f"  {'':<14} {'cases':>6} {'open':>5} {'overdue':>7} {'unans@due':>9} {'unans@24h':>9} "
              f"{'FRT p50':>7} {'FRT p90':>7} {'in SLA':>6} {'channel':>7} {'product':>7} {'helpdesk':>8}")
    lines = [f"Service level as of {figures['as_of']} (cases; FRT = first-response time)", header,
             line("all", figures)]
    for name, title in (("by_queue", "queue"), ("by_channel", "channel"), ("by_day", "day")):
        if figures[name]:
            lines += [f"  by {title}:"] + [line(key, f) for key, f in figures[name].items()]
    return "\n".join(lines)
