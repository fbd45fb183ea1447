"""Agents' actions on a whole case (conversation): claim, continue in a private channel, close, relabel.

apps/desk.py acts on single posts; the web workspace works on cases (the cases index). Every change goes through
`CaseStore.change` (apps/reply.py: `if_seq_no`/`if_primary_term`, re-read and re-decided on a 409), so of two
agents claiming one case at once exactly one wins, and the case writer's changes are never lost. The decision
functions raise `CaseActionError` with a message for the agent ("already claimed by anna").

Relabelling corrects the case's lead post (triage/cases.py `lead_post`, the post whose labels the case shows)
through apps/desk.py `relabel`, so `triage export-labels` picks the correction up like any other.
"""
from __future__ import annotations

from typing import Any, Optional

from elasticsearch import Elasticsearch

from apps import desk
from apps.reply import Case, CaseStore
from core.config import ElasticsearchSettings
from core.timestamps import utc_now
from triage.cases import lead_post

DONE_STATUSES = ("answered", "closed")


class CaseActionError(RuntimeError):
    """An action an agent asked for cannot be done; the message says why, in their words."""


def _existing(cases: CaseStore, case_id: str) -> Case:
    case = cases.case(case_id)
    if case is None:
        raise CaseActionError(f"no case with id {case_id}")
    return case


def holder(case: Case) -> Optional[str]:
    """The agent holding the case's claim, or None (a claim ends when the case is answered or closed)."""
    if case.get("status") != "claimed":
        return None
    return (case.get("agent") or {}).get("assignee")


def claim(cases: CaseStore, case_id: str, agent: str) -> None:
    """Take the case; refused when another agent holds it or it is answered or closed."""
    _existing(cases, case_id)

    def decide(case: Case) -> Optional[Case]:
        status, held_by = case.get("status"), holder(case)
        if status in DONE_STATUSES:
            raise CaseActionError(f"case {case_id} is already {status}")
        if held_by and held_by != agent:
            raise CaseActionError(f"already claimed by {held_by}")
        if held_by == agent:
            return None
        now = utc_now()
        return {"status": "claimed", "agent": {**(case.get("agent") or {}), "assignee": agent, "claimed_at": now},
                "updated_at": now}
    cases.change(case_id, decide)


def _not_held_by_another(case: Case, case_id: str, agent: str) -> None:
    held_by = holder(case)
    if held_by and held_by != agent:
        raise CaseActionError(f"case {case_id} is claimed by {held_by}")


def continue_private(cases: CaseStore, case_id: str, agent: str) -> None:
    """Mark the case for the helpdesk to continue in a private channel."""
    _existing(cases, case_id)

    def decide(case: Case) -> Optional[Case]:
        _not_held_by_another(case, case_id, agent)
        if case.get("continue_in_private_channel"):
            return None
        return {"continue_in_private_channel": True, "updated_at": utc_now()}
    cases.change(case_id, decide)


def close(cases: CaseStore, case_id: str, agent: str) -> None:
    """Close without (or after) answering: spam, a duplicate, nothing to say. Holds until the customer writes again
    (triage/cases.py HELD_STATUSES)."""
    _existing(cases, case_id)

    def decide(case: Case) -> Optional[Case]:
        if case.get("status") == "closed":
            raise CaseActionError(f"case {case_id} is already closed")
        _not_held_by_another(case, case_id, agent)
        now = utc_now()
        return {"status": "closed", "agent": {**(case.get("agent") or {}), "closed_by": agent, "closed_at": now},
                "updated_at": now}
    cases.change(case_id, decide)


def relabel(es: Elasticsearch, cfg: ElasticsearchSettings, cases: CaseStore, case_id: str, agent: str,
            intent: Optional[str] = None, sentiment: Optional[str] = None, topic: Optional[str] = None) -> str:
    """Correct the labels of the case's lead post (exported by `triage export-labels`); returns that post's id."""
    lead = lead_post(_existing(cases, case_id))
    if lead is None:
        raise CaseActionError(f"case {case_id} has no customer post to relabel")
    try:
        desk.relabel(es, cfg, lead["id"], agent, intent or None, sentiment or None, topic or None)
    except desk.DeskError as exc:
        raise CaseActionError(str(exc)) from None
    return str(lead["id"])


def open_cases_query(queue: Optional[str] = None, channel: Optional[str] = None, language: Optional[str] = None,
                     topic: Optional[str] = None, assignee: Optional[str] = None) -> dict[str, Any]:
    """Open customer cases (status new or claimed) with the queue's filters: what an agent can pick up."""
    filters: list[dict[str, Any]] = [{"terms": {"status": list(desk.OPEN_STATUSES)}},
                                     {"range": {"customer_posts": {"gt": 0}}}]
    for field, value in (("queue", queue), ("source", channel), ("language", language), ("topic", topic),
                         ("agent.assignee", assignee)):
        if value:
            filters.append({"term": {field: value}})
    return {"bool": {"filter": filters}}


QUEUE_FIELDS = ["case_id", "source", "status", "queue", "priority", "language", "intent", "sentiment", "topic",
                "due_at", "opened_at", "last_customer_post_at", "customer_posts", "agent", "private_channel"]


def queue(es: Elasticsearch, cfg: ElasticsearchSettings, size: int = 100, **filters: Optional[str]) -> dict[str, Any]:
    """Open cases, most urgent first: priority, then due time, then the oldest waiting customer."""
    response = es.search(index=cfg.cases_read_alias, query=open_cases_query(**filters), size=size,
                         source=QUEUE_FIELDS, track_total_hits=True,
                         sort=[{"priority": {"order": "asc", "missing": "_last"}},
                               {"due_at": {"order": "asc", "missing": "_last"}},
                               {"last_customer_post_at": {"order": "asc", "missing": "_last"}}])
    return {"total": response["hits"]["total"]["value"], "cases": [h["_source"] for h in response["hits"]["hits"]]}
