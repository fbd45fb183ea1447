"""Conversations (cases): which case a post belongs to, and what a case looks like with one more post.

Pure logic, no I/O: triage/case_writer.py reads and writes the case documents (schemas/case.v1.schema.json).

A case is one conversation on one channel: the posts of one thread (X conversation, Reddit submission,
Discourse topic, YouTube comment thread, Facebook post, Mastodon thread root, forum thread: the Post's
`thread_id`), or the post itself when it starts a thread. A post without any thread can instead be grouped
with the same author's other thread-less posts on that channel (`cases.author_window_hours`): the windows are
fixed, aligned to the Unix epoch, so a post's case never depends on what was read before it (a redelivery, a
replay or a reprocess puts it in the same case), at the price of splitting a conversation that crosses a
window boundary.

Why the case is recomputed from its list of posts instead of being updated step by step: the list (ids with
their time, role and routing, no text) is the only state, kept in time order, so a post already in the list
changes nothing (redelivery, replays and reprocessing never double-count), and a post that arrives late (a
brand answer read before the customer post it answers, in a replay) lands where it belongs and the case is
derived again as if everything had come in order. Nothing in the derivation can move a case backwards: a
post added to the list never merges two rounds of a conversation, so counts and `reopened` only grow.

Semantics:
- A round starts with a customer post when no round is open and ends with the next brand post (the answer).
  `reopened` counts the rounds after the first: the customer wrote again after an answer.
- queue, priority, reasons and labels come from the most urgent customer post of the current round (the open
  one, or the last one answered); `opened_at` and `due_at` from that round's first customer post (its
  routing decision's `triage.due_at`, so the SLA rules that exist decide it).
- `answered_*`, `first_response_seconds` and `within_sla` describe the case's first response: the first brand
  post after the first customer post; `within_sla` is null while unanswered and when the first round's queue
  has no SLA (nothing to judge). `answered_via` is "product" when that post id is in `product_reply_ids`
  (written by `triage reply`), "helpdesk" when it is an agent's answer in a helpdesk, else "channel".
- The helpdesks the case was handed to (apps/helpdesk_events.py, apps/helpdesk_poll.py) speak through three
  pure functions. An agent's answer there (`record_helpdesk_answer`) is one more brand entry in `posts`, with
  `via: "helpdesk"` and the id `helpdesk:<target>:<event key>`, so it answers the open round exactly like a
  channel post would, whichever of the two came first counts, and a replayed event is a no-op like a redelivered
  post. It is counted in `helpdesk_answers`, not in `brand_posts`: the same words usually reach the channel too
  (the helpdesk posts them, or an agent does), and counting them twice would invent brand posts. A close there
  (`close_from_helpdesk`) sets status "closed", held like an agent's close until the customer writes again; one
  older than the customer's last post is ignored (the customer has already written since). A reassignment
  (`assign_from_helpdesk`) sets `agent.assignee` and `helpdesk.<target>.assignee`, the newest one winning.
  Each returns the very same case when it changes nothing.
- status: "new" while a round is open, "claimed" when an agent claimed it since the round opened
  (`agent.claimed_at`), "answered" once the brand answered. "waiting" and "closed", set by agents, hold until
  the customer writes something newer than anything in the case. A case of brand posts only (a brand post
  read before the customer post it answers, or one nobody answered) is "closed": it is no customer case.
- Everything else in the document (`agent`, `product_reply_ids`, fields other tools add) is kept as it is.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Optional

from core.timestamps import utc_iso
from triage.routing import PRIORITIES, is_brand

Case = dict[str, Any]
Post = dict[str, Any]
Entry = dict[str, Any]  # one post in a case's `posts` list
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HELD_STATUSES = ("waiting", "closed")  # set by agents; kept until the customer writes again


class CaseKey(NamedTuple):
    case_id: str
    source: str
    thread_id: str  # the thread, or "author:<author id>@<window start>"
    grouping: str  # "thread" | "author"


def case_id(source: str, thread_id: str) -> str:
    """'case:' + 24 hex of sha256 of '<source>|<thread key>': stable, and no raw id in the document's _id."""
    return "case:" + hashlib.sha256(f"{source}|{thread_id}".encode("utf-8")).hexdigest()[:24]


def _key(source: str, thread_id: str, grouping: str) -> CaseKey:
    return CaseKey(case_id(source, thread_id), source, thread_id, grouping)


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def post_time(post: Post) -> datetime:
    """When the post was written; a post without `created_at` counts from when the pipeline processed it."""
    return instant(post.get("created_at") or post["processed_at"])


def case_key(post: Post, author_window_hours: float = 0) -> CaseKey:
    """The case of an enriched post: its thread on its channel; without a thread, the same author's window
    (when `author_window_hours` > 0 and the author and time are known; never for the brand's own posts, whose
    unrelated posts would all become one case); else the post itself, which starts its own thread."""
    source = post["source"]
    thread = post.get("thread_id") or post.get("reply_to_id")
    if thread:
        return _key(source, thread, "thread")
    author = post.get("author") or {}
    who = author.get("id") or author.get("handle")
    if author_window_hours > 0 and who and post.get("created_at") and not is_brand(post):
        window = timedelta(hours=author_window_hours)
        start = EPOCH + ((post_time(post) - EPOCH) // window) * window
        return _key(source, f"author:{who}@{utc_iso(start)}", "author")
    return _key(source, post["id"], "thread")


def _label(post: Post, name: str) -> Optional[str]:
    return (post.get(name) or {}).get("label")


def entry(post: Post) -> Entry:
    """What a case keeps of a post: ids, time, role and routing; never text or the author's name."""
    at = utc_iso(post_time(post))
    if is_brand(post) or (post.get("triage") or {}).get("brand"):
        author = post.get("author") or {}
        return {"id": post["id"], "role": "brand", "at": at, "priority": None,
                "by": author.get("handle") or author.get("id")}
    triage = post.get("triage") or {}
    return {"id": post["id"], "role": "customer", "at": at, "priority": triage.get("priority"),
            "queue": triage.get("queue"), "due_at": triage.get("due_at"), "reasons": list(triage.get("reasons") or []),
            "private_channel": bool(triage.get("private_channel")), "suggested_reply": triage.get("suggested_reply"),
            "language": (post.get("language") or {}).get("code"), "intent": _label(post, "intent"),
            "sentiment": _label(post, "sentiment"), "topic": _label(post, "topic")}


@dataclass
class _Round:
    """Customer posts up to the brand post that answered them (None while open)."""
    posts: list[Entry] = field(default_factory=list)
    answer: Optional[Entry] = None


def _rounds(posts: list[Entry]) -> list[_Round]:
    rounds: list[_Round] = []
    for post in posts:
        if post["role"] == "customer":
            if not rounds or rounds[-1].answer is not None:
                rounds.append(_Round())
            rounds[-1].posts.append(post)
        elif rounds and rounds[-1].answer is None:
            rounds[-1].answer = post
    return rounds


def _urgency(post: Entry) -> tuple[int, datetime, datetime]:
    """Sort key, most urgent first: priority, then the earlier deadline, then the earlier post."""
    rank = PRIORITIES.index(post["priority"]) if post.get("priority") in PRIORITIES else len(PRIORITIES)
    due = instant(post["due_at"]) if post.get("due_at") else datetime.max.replace(tzinfo=timezone.utc)
    return rank, due, instant(post["at"])


def _current(rounds: list[_Round]) -> dict[str, Any]:
    """Routing and labels of the most urgent post of the current round; opened_at and due_at of its first post."""
    if not rounds:
        return {name: None for name in ("queue", "priority", "language", "intent", "sentiment", "topic",
                                        "suggested_reply", "opened_at", "due_at")} | {"priority_reasons": []}
    current = rounds[-1]
    lead = min(current.posts, key=_urgency)
    private_replies = [p["suggested_reply"] for p in current.posts if p.get("suggested_reply")]
    return {"queue": lead.get("queue"), "priority": lead.get("priority"), "priority_reasons": lead.get("reasons", []),
            "language": lead.get("language"), "intent": lead.get("intent"), "sentiment": lead.get("sentiment"),
            "topic": lead.get("topic"), "suggested_reply": lead.get("suggested_reply") or next(iter(private_replies), None),
            "opened_at": current.posts[0]["at"], "due_at": current.posts[0].get("due_at")}


def lead_post(case: Case) -> Optional[Entry]:
    """The customer post whose routing and labels the case shows (the most urgent of its current round): the one an
    agent's relabelling of the case corrects (apps/case_desk.py)."""
    rounds = _rounds(case.get("posts") or [])
    return min(rounds[-1].posts, key=_urgency) if rounds else None


def _first_response(rounds: list[_Round], product_reply_ids: list[str]) -> dict[str, Any]:
    answer = rounds[0].answer if rounds else None
    if answer is None:
        return {"answered_at": None, "first_response_seconds": None, "within_sla": None, "answered_by": None,
                "answered_via": None}
    asked, due = rounds[0].posts[0], rounds[0].posts[0].get("due_at")
    return {"answered_at": answer["at"],
            "first_response_seconds": round((instant(answer["at"]) - instant(asked["at"])).total_seconds(), 3),
            "within_sla": None if due is None else instant(answer["at"]) <= instant(due),
            "answered_by": answer.get("by"), "answered_via": _via(answer, product_reply_ids)}


def _via(answer: Entry, product_reply_ids: list[str]) -> str:
    if answer.get("via") == "helpdesk":
        return "helpdesk"
    return "product" if answer["id"] in product_reply_ids else "channel"


def _status(before: Optional[Case], rounds: list[_Round], opened_at: Optional[str], added: Entry,
            agent: dict[str, Any]) -> str:
    if not rounds:
        return "closed"
    if rounds[-1].answer is not None:
        status = "answered"
    else:
        claimed = agent.get("claimed_at")
        status = "claimed" if claimed and opened_at and instant(claimed) >= instant(opened_at) else "new"
    if before and before.get("status") in HELD_STATUSES and before.get("customer_posts"):
        newer = added["role"] == "customer" and instant(added["at"]) > instant(before["last_post_at"])
        if not newer:
            return before["status"]
    return status


def new_case(key: CaseKey) -> Case:
    return {"case_id": key.case_id, "source": key.source, "thread_id": key.thread_id, "grouping": key.grouping,
            "posts": [], "product_reply_ids": [], "agent": {"assignee": None, "claimed_at": None}}


def _has(case: Case, entry_id: str) -> bool:
    return any(p["id"] == entry_id for p in case.get("posts", []))


def merge(case: Optional[Case], post: Post, key: Optional[CaseKey] = None) -> Case:
    """The case with `post` in it. A post already in the case returns the case unchanged (the same object).

    `key` names the case to start when `case` is None (default: the post's thread, or the post itself)."""
    if case is not None and _has(case, post["id"]):
        return case
    return _derive(case, case if case is not None else new_case(key or case_key(post)), entry(post))


def _derive(before: Optional[Case], case: Case, added: Entry) -> Case:
    """`case` derived again from its posts with `added` among them (`before`: the stored case, None when new)."""
    posts = sorted([*case.get("posts", []), added], key=lambda p: (instant(p["at"]), p["id"]))
    rounds = _rounds(posts)
    customers = [p for p in posts if p["role"] == "customer"]
    helpdesk = sum(1 for p in posts if p.get("via") == "helpdesk")
    current = _current(rounds)
    agent = case.get("agent") or {}
    return {**case, **current, **_first_response(rounds, case.get("product_reply_ids") or []),
            "posts": posts,
            "status": _status(before, rounds, current["opened_at"], added, agent),
            "private_channel": any(p.get("private_channel") for p in customers),
            "first_post_at": posts[0]["at"], "last_post_at": posts[-1]["at"],
            "last_customer_post_id": customers[-1]["id"] if customers else None,
            "last_customer_post_at": customers[-1]["at"] if customers else None,
            "customer_posts": len(customers), "brand_posts": len(posts) - len(customers) - helpdesk,
            "helpdesk_answers": helpdesk, "reopened": max(0, len(rounds) - 1)}


def record_helpdesk_answer(case: Case, target: str, event_key: str, at: str, by: Optional[str] = None) -> Case:
    """The case with an agent's answer in helpdesk `target` (the event `event_key` there, at `at`, by the agent id
    `by`) among its posts. The same event again returns the case unchanged (the same object)."""
    entry_id = f"helpdesk:{target}:{event_key}"
    if _has(case, entry_id):
        return case
    added = {"id": entry_id, "role": "brand", "at": utc_iso(instant(at)), "priority": None, "by": by,
             "via": "helpdesk"}
    return _derive(case, case, added)


def _helpdesk(case: Case, target: str) -> dict[str, Any]:
    return dict((case.get("helpdesk") or {}).get(target) or {})


def close_from_helpdesk(case: Case, target: str, at: str) -> Case:
    """The case closed in helpdesk `target` at `at` (see the module docstring); unchanged when it already is, or
    when the customer wrote after that close."""
    last = case.get("last_customer_post_at")
    if case.get("status") == "closed" or not case.get("customer_posts") or (last and instant(at) < instant(last)):
        return case
    state = {**_helpdesk(case, target), "closed_at": utc_iso(instant(at))}
    return {**case, "status": "closed", "helpdesk": {**(case.get("helpdesk") or {}), target: state}}


def assign_from_helpdesk(case: Case, target: str, assignee: Optional[str], at: str) -> Case:
    """The case assigned to `assignee` (the helpdesk's agent or group; None: unassigned) in helpdesk `target` at
    `at`; unchanged when it already is (nobody, before any assignment there), or when a newer assignment from
    there is recorded."""
    state = _helpdesk(case, target)
    since = state.get("assigned_at")
    if state.get("assignee") == assignee or (since and instant(at) < instant(since)):
        return case
    state.update(assignee=assignee, assigned_at=utc_iso(instant(at)))
    return {**case, "agent": {**(case.get("agent") or {}), "assignee": assignee},
            "helpdesk": {**(case.get("helpdesk") or {}), target: state}}


def merge_all(case: Optional[Case], posts: list[Post], key: CaseKey) -> Optional[Case]:
    """`merge` of several posts of one case, in the order given (one bundle's posts of that case)."""
    for post in posts:
        case = merge(case, post, key)
    return case
