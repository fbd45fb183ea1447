"""Supervisors' service level and analysts' search, from the same code as `triage query`, `--sla` and
`triage alerts` (apps/service_level.py, apps/alerts.py, apps/query.py), so the workspace shows
the numbers the command line shows.

Search results are cut to the analysts' allow-list (access.ANALYST_POST_FIELDS) for every role before they
leave the server: the posts index holds no raw text, and the allow-list keeps it so if the index ever gains a field.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, g, jsonify, render_template, request

from apps import alerts, query, service_level
from apps.web import charts
from apps.web.access import allowed, roles
from apps.web.context import context
from apps.web.i18n import translate

blueprint = Blueprint("overview", __name__)
SEARCH_FACETS = ("source", "language", "sentiment", "intent", "topic", "queue")
SPIKE_HOURS = 48


def _agents_load(es: Any, cases_index: str) -> dict[str, int]:
    response = es.search(index=cases_index, size=0, query={"bool": {"filter": [service_level.OPEN]}},
                         track_total_hits=False, aggs={"agents": {"terms": {"field": "agent.assignee", "size": 100}}})
    return {b["key"]: b["doc_count"] for b in response["aggregations"]["agents"]["buckets"]}


def _volume(es: Any, index: str, now: datetime) -> tuple[list[str], list[int], list[float], list[int], list[str]]:
    """Hourly customer posts and negative share over the last SPIKE_HOURS hours with posts (ending now, or at the
    newest post when the index is older), and the hours where `triage alerts` would have found a spike."""
    newest = es.search(index=index, size=0, track_total_hits=False,
                       aggs={"newest": {"max": {"field": "created_at"}}})["aggregations"]["newest"]["value"]
    end = min(now, datetime.fromtimestamp(newest / 1000, timezone.utc) + timedelta(hours=1)) if newest else now
    found = alerts.hourly_spikes(es, index, context().settings.alerts, end - timedelta(hours=SPIKE_HOURS), end)
    hours = [hour.strftime("%Y-%m-%dT%H") for hour, _, _ in found]
    totals = [counts["posts"] for _, counts, _ in found]
    negative = [round(counts["negative"] / counts["posts"], 4) if counts["posts"] else 0.0 for _, counts, _ in found]
    marks = [i for i, (_, _, spikes) in enumerate(found) if spikes]
    return hours, totals, negative, marks, [alert.message() for _, _, spikes in found for alert in spikes]


def _supervisor_figures() -> dict[str, Any]:
    ctx, cfg = context(), context().settings.elasticsearch
    now = datetime.now(timezone.utc)
    sl = service_level.service_level(ctx.es, cfg.cases_read_alias, query.QueryFilters(), now)
    hours, totals, negative, marks, spikes = _volume(ctx.es, cfg.read_alias, now)
    return {"service_level": sl, "volume": {"hours": hours, "posts": totals, "negative_share": negative,
                                             "spike_hours": [hours[i] for i in marks]},
            "alerts": spikes, "agents_load": _agents_load(ctx.es, cfg.cases_read_alias), "_marks": marks}


@blueprint.get("/supervisor")
@roles("supervisor")
def supervisor() -> str:
    f = _supervisor_figures()
    sl, t = f["service_level"], (lambda key: translate(key, g.lang))
    days = list(sl["by_day"])
    svg = {
        "open": charts.bars("chart-open-overdue", t("open_per_queue"),
                            [(q, (v["open"], v["overdue"])) for q, v in sl["by_queue"].items()], ["open", "overdue"]),
        "sla_day": charts.lines("chart-sla-over-time", t("sla_over_time"), days,
                                {"within SLA": [sl["by_day"][d]["within_sla_share"] for d in days]}, [True]),
        "sla_channel": charts.bars("chart-sla-by-channel", t("sla_by_channel"),
                                   [(c, (v["within_sla_share"],)) for c, v in sl["by_channel"].items()],
                                   ["within SLA"], percent=True),
        "volume": charts.lines("chart-volume", t("volume"), f["volume"]["hours"],
                               {"posts": f["volume"]["posts"], "negative share": f["volume"]["negative_share"]},
                               [False, True], f["_marks"]),
        "load": charts.bars("chart-agents-load", t("load"), list((a, (n,)) for a, n in f["agents_load"].items()),
                            ["open cases"]),
    }
    return render_template("supervisor.html", sl=sl, svg=svg, alerts=f["alerts"],
                           duration=service_level.duration_text)


@blueprint.get("/api/supervisor")
@roles("supervisor")
def supervisor_api() -> Any:
    figures = _supervisor_figures()
    figures.pop("_marks")
    return jsonify(figures)


def _filters() -> query.QueryFilters:
    args = request.args
    return query.QueryFilters(text=args.get("q") or None, since=args.get("from") or None,
                              until=args.get("to") or None,
                              **{name: [args[name]] for name in SEARCH_FACETS if args.get(name)})


def _search() -> dict[str, Any]:
    ctx, filters = context(), _filters()
    index = ctx.settings.elasticsearch.read_alias
    found = query.search(ctx.es, index, filters, size=50)
    summary = query.summarize(ctx.es, index, filters)
    return {"total": found["total"], "posts": [allowed(post) for post in found["posts"]],
            "facets": {name: summary[name] for name in SEARCH_FACETS}, "over_time": summary["over_time"]}


@blueprint.get("/search")
@roles("analyst", "supervisor")
def search_page() -> str:
    result = _search()
    days = list(result["over_time"])
    trend = charts.lines("chart-trend", translate("trend", g.lang), days,
                         {"posts": [result["over_time"][d] for d in days]}, [False])
    return render_template("search.html", result=result, trend=trend, args=request.args, facets=SEARCH_FACETS)


@blueprint.get("/api/search")
@roles("analyst", "supervisor")
def search_api() -> Any:
    return jsonify(_search())
