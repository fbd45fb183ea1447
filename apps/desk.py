"""The agents' work surface: list the open queue, claim, answer, close and relabel posts.

Every change is a read-modify-write guarded by Elasticsearch's optimistic concurrency control
(`if_seq_no` / `if_primary_term`): when two agents act on the same post at once, the second write
is refused, re-read and decided again, so two agents can never both hold a claim. The workflow
fields live under `agent` in the posts index (analysts may count them); notes, which agents write
freely and may contain customer data, live beside the raw post in the private index.
A post its author deleted (`deleted_at`, see core/documents.py) leaves the open queue: there is nothing
left to answer, and its raw text is gone. So do the brand's own posts (`author.is_brand`): they are answers,
never routed (triage/routing.py), and nobody answers them.
"""
from __future__ import annotations

import getpass
import json
import os
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional

from elasticsearch import ConflictError, Elasticsearch, NotFoundError
from elasticsearch.helpers import scan

from core.labels import INTENT_LABELS, SENTIMENT_LABELS
from core.config import ElasticsearchSettings
from core.documents import doc_key, joined
from core.terminal import printable
from core.timestamps import utc_now

OPEN_STATUSES = ("new", "claimed")  # defined here only: the queue and apps/analytics.py use it
NOT_DELETED = {"bool": {"must_not": [{"exists": {"field": "deleted_at"}}]}}  # posts still to answer
NOT_BRAND = {"bool": {"must_not": [{"term": {"author.is_brand": True}}]}}  # the brand's own posts answer, not ask
_ATTEMPTS = 5
_DOC_KEY = re.compile(r"[0-9a-f]{32}")
Agent = dict[str, Any]


class DeskError(RuntimeError):
    """An action an agent asked for cannot be done; the message says why, in their words."""


def current_agent(explicit: Optional[str] = None) -> str:
    """Who is acting: --agent, else $TRIAGE_AGENT, else the login name."""
    return explicit or os.environ.get("TRIAGE_AGENT") or getpass.getuser()


def queue(es: Elasticsearch, cfg: ElasticsearchSettings, queue_name: Optional[str] = None,
          assignee: Optional[str] = None, statuses: tuple[str, ...] = OPEN_STATUSES, size: int = 50) -> dict[str, Any]:
    """Open posts, most urgent first (priority, then due time), with the raw text for agents."""
    filters: list[dict[str, Any]] = [{"terms": {"agent.status": list(statuses)}}, NOT_DELETED, NOT_BRAND]
    if queue_name:
        filters.append({"term": {"triage.queue": queue_name}})
    if assignee:
        filters.append({"term": {"agent.assignee": assignee}})
    response = es.search(index=cfg.read_alias, query={"bool": {"filter": filters}}, size=size, track_total_hits=True,
                         sort=[{"triage.priority": {"order": "asc", "missing": "_last"}},
                               {"triage.due_at": {"order": "asc", "missing": "_last"}},
                               {"created_at": {"order": "asc", "missing": "_last"}}])
    hits = response["hits"]["hits"]
    raw = {}
    if hits:
        docs = es.mget(index=cfg.private_index, ids=[h["_id"] for h in hits])["docs"]
        raw = {d["_id"]: d["_source"] for d in docs if d.get("found")}
    return {"total": response["hits"]["total"]["value"],
            "posts": [joined(h["_source"], raw.get(h["_id"])) for h in hits]}


def document_id(post_id: str) -> str:
    """The document of a post id as agents see it, or of the hashed id the analysts' side shows."""
    return post_id if _DOC_KEY.fullmatch(post_id) else doc_key(post_id)


def _change(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str,
            decide: Callable[[dict[str, Any]], Agent]) -> dict[str, Any]:
    """Apply `decide(post) -> new agent fields` with optimistic concurrency; re-decide on a conflict."""
    for _ in range(_ATTEMPTS):
        try:
            current = es.get(index=cfg.read_alias, id=document_id(post_id))
        except NotFoundError:
            raise DeskError(f"no post with id {post_id}") from None
        agent = {**decide(current["_source"]), "updated_at": utc_now()}
        try:
            es.update(index=current["_index"], id=current["_id"], doc={"agent": agent}, refresh="wait_for",
                      if_seq_no=current["_seq_no"], if_primary_term=current["_primary_term"])
            return {**current["_source"], "agent": {**current["_source"].get("agent", {}), **agent}}
        except ConflictError:
            continue  # somebody changed the post since we read it: read again and decide again
    raise DeskError(f"post {post_id} keeps changing under us; try again")


def _agent(post: dict[str, Any]) -> Agent:
    return dict(post.get("agent") or {"status": "new"})


def claim(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str, agent: str, force: bool = False) -> dict[str, Any]:
    def decide(post: dict[str, Any]) -> Agent:
        fields = _agent(post)
        if fields["status"] in ("answered", "closed"):
            raise DeskError(f"post {post_id} is already {fields['status']}")
        holder = fields.get("assignee")
        if fields["status"] == "claimed" and holder != agent and not force:
            raise DeskError(f"post {post_id} is claimed by {holder} since {fields.get('claimed_at')}; "
                            "use --force to take it over")
        return {**fields, "status": "claimed", "assignee": agent, "claimed_at": utc_now()}
    return _change(es, cfg, post_id, decide)


def answer(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str, agent: str, note: Optional[str] = None,
           force: bool = False) -> dict[str, Any]:
    """Mark answered (claiming it if unclaimed) and record whether the answer met the deadline."""
    def decide(post: dict[str, Any]) -> Agent:
        fields = _agent(post)
        holder = fields.get("assignee")
        if fields["status"] == "claimed" and holder != agent and not force:
            raise DeskError(f"post {post_id} is claimed by {holder}; use --force to answer it anyway")
        if fields["status"] in ("answered", "closed"):
            raise DeskError(f"post {post_id} is already {fields['status']}")
        answered_at = utc_now()
        due = (post.get("triage") or {}).get("due_at")
        return {**fields, "status": "answered", "assignee": agent, "answered_at": answered_at,
                "within_sla": due is None or _instant(answered_at) <= _instant(due)}
    updated = _change(es, cfg, post_id, decide)
    if note:
        add_note(es, cfg, post_id, agent, note)
    return updated


def close(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str, agent: str) -> dict[str, Any]:
    """Close without (or after) answering, e.g. spam or a duplicate."""
    def decide(post: dict[str, Any]) -> Agent:
        fields = _agent(post)
        if fields["status"] == "closed":
            raise DeskError(f"post {post_id} is already closed")
        return {**fields, "status": "closed", "closed_at": utc_now(), "closed_by": agent}
    return _change(es, cfg, post_id, decide)


def relabel(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str, agent: str, intent: Optional[str] = None,
            sentiment: Optional[str] = None, topic: Optional[str] = None) -> dict[str, Any]:
    """Record an agent's correction of the model's labels (exported as training data)."""
    if intent is None and sentiment is None and topic is None:
        raise DeskError("give at least one of --intent, --sentiment, --topic")
    if intent is not None and intent not in INTENT_LABELS:
        raise DeskError(f"unknown intent {intent!r}; one of {', '.join(INTENT_LABELS)}")
    if sentiment is not None and sentiment not in SENTIMENT_LABELS:
        raise DeskError(f"unknown sentiment {sentiment!r}; one of {', '.join(SENTIMENT_LABELS)}")

    def decide(post: dict[str, Any]) -> Agent:
        fields = _agent(post)
        corrected = {k: v for k, v in (fields.get("corrected") or {}).items()}
        corrected.update({k: v for k, v in (("intent", intent), ("sentiment", sentiment), ("topic", topic)) if v})
        return {**fields, "corrected": {**corrected, "by": agent, "at": utc_now()}}
    return _change(es, cfg, post_id, decide)


def add_note(es: Elasticsearch, cfg: ElasticsearchSettings, post_id: str, agent: str, note: str) -> None:
    """Append a note beside the raw post (private index), with the same concurrency guard."""
    for _ in range(_ATTEMPTS):
        current = es.get(index=cfg.private_index, id=document_id(post_id))
        notes = [*current["_source"].get("agent_notes", []), {"by": agent, "at": utc_now(), "text": note}]
        try:
            es.update(index=cfg.private_index, id=current["_id"], doc={"agent_notes": notes},
                      if_seq_no=current["_seq_no"], if_primary_term=current["_primary_term"])
            return
        except ConflictError:
            continue
    raise DeskError(f"could not add the note to {post_id}; try again")


def corrected_labels(es: Elasticsearch, cfg: ElasticsearchSettings) -> Iterator[dict[str, Any]]:
    """Agents' corrections as training rows in the data/intents format, on the redacted text.

    Redacted text keeps personal data out of training sets; the placeholders ([IBAN], [PHONE])
    are what the model sees in production-like text anyway.
    """
    hits = scan(es, index=cfg.read_alias, query={"query": {"exists": {"field": "agent.corrected.by"}}}, size=500)
    for hit in hits:
        post, corrected = hit["_source"], hit["_source"]["agent"]["corrected"]
        yield {"id": hit["_id"], "text": post["text_redacted"], "language": post.get("language", {}).get("code"),
               "label": corrected.get("intent") or (post.get("intent") or {}).get("label"),
               "sentiment": corrected.get("sentiment") or (post.get("sentiment") or {}).get("label"),
               "topic": corrected.get("topic"), "corrected": sorted(k for k in corrected if k not in ("by", "at")),
               "corrected_at": corrected.get("at")}


def export_labels(es: Elasticsearch, cfg: ElasticsearchSettings, path: str) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in corrected_labels(es, cfg):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_queue(result: dict[str, Any], width: int = 80) -> str:
    now = datetime.now(timezone.utc)
    lines = [f"{result['total']} open posts" + (f", showing {len(result['posts'])}" if result["posts"] else "")]
    for post in result["posts"]:
        triage, agent = post.get("triage") or {}, post.get("agent") or {}
        due = triage.get("due_at")
        overdue = due is not None and _instant(due) < now
        status = agent.get("status", "new") + (f":{agent['assignee']}" if agent.get("assignee") else "")
        text = " ".join(str(post.get("text", post.get("text_redacted", ""))).split())
        # Every cell comes from the post (or an agent): shown through printable(), so control characters cannot act.
        lines.append(f"{printable(triage.get('priority', '--'))} {printable(str(due or 'no SLA')[:16]):<16}"
                     f"{'!' if overdue else ' '} {printable(triage.get('queue', '-')):<10} {printable(status):<16} "
                     f"{printable((post.get('intent') or {}).get('label', '-')):<17} {printable(post['id']):<24} "
                     f"{printable(text, limit=width)}")
        if triage.get("private_channel"):
            reasons = "; ".join(map(str, (triage.get("reasons") or [])[-1:]))
            lines.append(f"{'':>20}private channel: {printable(reasons)}")
    return "\n".join(lines)
