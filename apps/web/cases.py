"""The agents' pages: the queue of open cases, a case with its posts, and the actions on it.

The raw text (private index) is read only for the agent role, and each time it is, the audit log records who
saw which case (never the text). Actions go through apps/case_desk.py (optimistic concurrency) and the reply
through apps/reply.py `reply`, the product's one reply path with its personal-data guard.
"""
from __future__ import annotations

from typing import Any, Optional

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for

from apps import case_desk
from apps.reply import Case, reply
from apps.web.context import context
from apps.web.access import roles
from apps.web.i18n import translate
from connectors.replies.base import ReplyError
from core.documents import doc_key
from core.labels import INTENT_LABELS, SENTIMENT_LABELS

blueprint = Blueprint("cases", __name__)
FILTERS = ("queue", "channel", "language", "topic")
RAW_FIELDS = ["text", "title", "author", "url"]


def _queue_filters() -> dict[str, Optional[str]]:
    filters = {name: request.args.get(name) or None for name in FILTERS}
    filters["assignee"] = g.user if request.args.get("mine") == "1" else None
    return filters


def _queue_row(case: Case) -> dict[str, Any]:
    agent = case.get("agent") or {}
    return {"case_id": case["case_id"], "priority": case.get("priority"), "due_at": case.get("due_at"),
            "status": case.get("status"), "queue": case.get("queue"), "channel": case.get("source"),
            "language": case.get("language"), "topic": case.get("topic"), "intent": case.get("intent"),
            "sentiment": case.get("sentiment"), "assignee": case_desk.holder(case) and agent.get("assignee"),
            "customer_posts": case.get("customer_posts"), "private_channel": bool(case.get("private_channel"))}


@blueprint.get("/queue")
@roles("agent", "supervisor")
def queue_page() -> str:
    ctx = context()
    result = case_desk.queue(ctx.es, ctx.settings.elasticsearch, **_queue_filters())
    return render_template("queue.html", total=result["total"], rows=[_queue_row(c) for c in result["cases"]],
                           filters={name: request.args.get(name, "") for name in FILTERS},
                           mine=request.args.get("mine") == "1")


@blueprint.get("/api/queue")
@roles("agent", "supervisor")
def queue_api() -> Any:
    ctx = context()
    result = case_desk.queue(ctx.es, ctx.settings.elasticsearch, **_queue_filters())
    return jsonify({"total": result["total"], "cases": [_queue_row(c) for c in result["cases"]]})


def _case_or_404(case_id: str) -> Case:
    case = context().cases.case(case_id)
    if case is None:
        abort(404)
    return case


def _posts(case: Case, with_raw: bool) -> list[dict[str, Any]]:
    """The case's posts in order: its entry (role, time, routing), the redacted document, and for agents the raw
    post, all by document id (the hash of the post id) with one mget per index."""
    ctx, cfg = context(), context().settings.elasticsearch
    entries = case.get("posts") or []
    if not entries:
        return []
    ids = [doc_key(entry["id"]) for entry in entries]
    redacted = ctx.es.mget(index=cfg.read_alias, ids=ids)["docs"]
    raw = (ctx.es.mget(index=cfg.private_index, ids=ids, source_includes=RAW_FIELDS)["docs"] if with_raw
           else [{} for _ in ids])
    return [{"entry": entry, "post": r.get("_source") or {}, "raw": p.get("_source") if p.get("found") else None}
            for entry, r, p in zip(entries, redacted, raw)]


def _audit_raw(case_id: str, count: int) -> None:
    context().audit.record(g.user, g.role, "view_raw", case_id, address=request.remote_addr, posts=count)


@blueprint.get("/cases/<case_id>")
@roles("agent", "supervisor")
def case_page(case_id: str) -> str:
    case = _case_or_404(case_id)
    agent_view = g.role == "agent"
    posts = _posts(case, agent_view)
    if agent_view:
        _audit_raw(case_id, len(posts))
    return render_template("case.html", case=case, posts=posts, agent_view=agent_view,
                           holder=case_desk.holder(case), intents=INTENT_LABELS, sentiments=SENTIMENT_LABELS,
                           can_reply=context().sources is not None)


def _json_post(item: dict[str, Any], with_raw: bool) -> dict[str, Any]:
    post = {**item["entry"], "document": item["post"]}
    if with_raw:
        post["raw"] = item["raw"]
    return post


@blueprint.get("/api/cases/<case_id>")
@roles("agent", "supervisor")
def case_api(case_id: str) -> Any:
    case = _case_or_404(case_id)
    agent_view = g.role == "agent"
    posts = _posts(case, agent_view)
    if agent_view:
        _audit_raw(case_id, len(posts))
    return jsonify({"case": {k: v for k, v in case.items() if k != "posts"},
                    "posts": [_json_post(item, agent_view) for item in posts]})


@blueprint.get("/api/cases/<case_id>/raw")
@roles("agent")
def case_raw_api(case_id: str) -> Any:
    posts = _posts(_case_or_404(case_id), True)
    _audit_raw(case_id, len(posts))
    return jsonify({"case_id": case_id, "posts": [{"id": item["entry"]["id"], "role": item["entry"]["role"],
                                                    **(item["raw"] or {})} for item in posts]})


def _act(case_id: str, action: str, done_key: str, run: Any) -> Any:
    """Run one action, flash its outcome, record it in the audit log, and go back to the case."""
    ctx = context()
    try:
        run()
    except (case_desk.CaseActionError, ReplyError) as exc:
        flash(str(exc), "error")
        ctx.audit.record(g.user, g.role, action, case_id, outcome="refused", address=request.remote_addr,
                         reason=str(exc))
    else:
        flash(translate(done_key, g.lang), "ok")
        ctx.audit.record(g.user, g.role, action, case_id, address=request.remote_addr)
    return redirect(url_for("cases.case_page", case_id=case_id))


@blueprint.post("/cases/<case_id>/claim")
@roles("agent")
def claim(case_id: str) -> Any:
    return _act(case_id, "claim", "claimed", lambda: case_desk.claim(context().cases, case_id, g.user))


@blueprint.post("/cases/<case_id>/reply")
@roles("agent")
def reply_to(case_id: str) -> Any:
    ctx = context()

    def send() -> None:
        if ctx.sources is None:
            raise ReplyError(translate("no_reply_sources", g.lang))
        case = _case_or_404(case_id)
        held_by = case_desk.holder(case)
        if held_by and held_by != g.user:
            raise ReplyError(f"case {case_id} is claimed by {held_by}")
        reply(ctx.settings, ctx.cases, ctx.sources, case_id, request.form.get("text", ""), detector=ctx.detector())
    return _act(case_id, "reply", "replied", send)


@blueprint.post("/cases/<case_id>/private")
@roles("agent")
def private(case_id: str) -> Any:
    return _act(case_id, "continue_private", "marked_private",
                lambda: case_desk.continue_private(context().cases, case_id, g.user))


@blueprint.post("/cases/<case_id>/close")
@roles("agent")
def close(case_id: str) -> Any:
    return _act(case_id, "close", "closed", lambda: case_desk.close(context().cases, case_id, g.user))


@blueprint.post("/cases/<case_id>/relabel")
@roles("agent")
def relabel(case_id: str) -> Any:
    ctx, form = context(), request.form
    return _act(case_id, "relabel", "relabelled", lambda: case_desk.relabel(
        ctx.es, ctx.settings.elasticsearch, ctx.cases, case_id, g.user, form.get("intent"), form.get("sentiment"),
        form.get("topic", "").strip() or None))
