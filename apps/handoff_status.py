"""`triage handoff --status`: per target, how many cases are in which handoff state, and which wait or failed why.

Read from the cases index, where the handoff records its state (`handoff.<target>.state`, mapped as `flattened`
so the states can be counted per target with a terms aggregation); the pending and failed cases are listed with
their reasons, newest first. No text is shown: case ids, ticket ids, states and the helpdesk's reasons.
"""
from __future__ import annotations

from typing import Any

from core.terminal import printable

STATES = ("creating", "created", "pending", "failed")
_LISTED = 20


def handoff_status(es: Any, cases_index: str, targets: list[str]) -> dict[str, Any]:
    """{target: {"states": {state: count}, "waiting": [{case_id, state, reason, ticket_id, updated_at}]}}."""
    result: dict[str, Any] = {}
    for name in targets:
        field = f"handoff.{name}"
        counted = es.search(index=cases_index, size=0, aggs={"states": {"terms": {"field": f"{field}.state",
                                                                                  "size": 10}}})
        states = {state: 0 for state in STATES}
        for bucket in counted["aggregations"]["states"]["buckets"]:
            states[bucket["key"]] = bucket["doc_count"]
        hits = es.search(index=cases_index, size=_LISTED, source_includes=[field, "case_id"],
                         query={"terms": {f"{field}.state": ["pending", "failed", "creating"]}},
                         sort=[{f"{field}.updated_at": {"order": "desc"}}])["hits"]["hits"]
        waiting = []
        for hit in hits:
            entry = ((hit["_source"].get("handoff") or {}).get(name)) or {}
            waiting.append({"case_id": hit["_id"], "state": entry.get("state"), "reason": entry.get("reason"),
                            "ticket_id": entry.get("ticket_id"), "updated_at": entry.get("updated_at")})
        result[name] = {"states": states, "waiting": waiting}
    return result


def format_status(status: dict[str, Any]) -> str:
    lines = []
    for name, target in status.items():
        counts = "  ".join(f"{state} {count}" for state, count in target["states"].items())
        lines.append(f"{printable(name)}: {counts}")
        for case in target["waiting"]:
            lines.append(f"  {case['state']:<8} {case['case_id']}  {printable(case['reason'] or '')}"
                         f"  ({case['updated_at']})")
    return "\n".join(lines) or "no targets"
