"""Case -> ticket: what a helpdesk receives for one case, with a target's mapping applied. Pure, no I/O.

Kept apart from the runner (apps/handoff.py) so the mapping, the part a team tunes in handoff.yaml, is one small
function that is tested on its own. What goes where:

* group: `mapping.groups[queue]`, else `mapping.groups["default"]`, else none (the helpdesk's own default);
  priority: `mapping.priorities[P1..P4]`; due date: the case's `due_at` (the due time of its first unanswered
  customer post, which the SLA rules set).
* tags: `<prefix>` on every ticket (to find them all), `<prefix>:reason:<reason>` per routing reason,
  `<prefix>:topic:<topic>`, `<prefix>:private_channel` for a case with personal data; language, sentiment, intent
  and topic go to the custom field `mapping.fields` names, else (with `label_tags`) become `<field>:<value>` tags.
  Values are lowercased with anything but letters, digits, `_`, `-` and `:` turned into `_`, because helpdesks
  split or refuse tags at spaces.
* text: the post's redacted text is the public text, its raw text (which may hold personal data) the internal
  text; the target's `raw_text` says whether that goes into an internal note or the ticket body. The title is
  built from the redacted text only.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from connectors.helpdesks.base import Customer, Message, TicketDraft
from connectors.helpdesks.config import TargetConfig

Case = dict[str, Any]
PostView = dict[str, Any]  # core.documents.joined: the analysts' fields plus, when readable, the raw ones
LABEL_FIELDS = ("language", "sentiment", "intent", "topic")  # tags `<field>:<value>` unless mapped to a field
_TAG_UNSAFE = re.compile(r"[^\w:-]+", re.UNICODE)
_TITLE_CHARS = 80


def tag(value: Any) -> str:
    return _TAG_UNSAFE.sub("_", str(value).strip().lower()).strip("_")


def customer_post_ids(case: Case) -> list[str]:
    """The case's customer posts in time order (the case keeps its posts sorted)."""
    return [p["id"] for p in case.get("posts") or [] if p.get("role") == "customer"]


def message(post_id: str, post: Optional[PostView]) -> Message:
    """One customer post for the helpdesk. A post that cannot be read (deleted meanwhile) still gets its place,
    with an empty text, so the ticket's history says a post was there."""
    post = post or {}
    return Message(post_id=post_id, created_at=str(post.get("created_at") or ""),
                   public_text=str(post.get("text_redacted") or ""),
                   internal_text=post.get("text") if post.get("text") and not post.get("deleted_at") else None,
                   link=post.get("url"))


def _field_value(case: Case, name: str) -> Optional[str]:
    value = case.get(name)
    if value is None or value == "":
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def _title(case: Case, first: Message) -> str:
    line = " ".join(first.public_text.split())
    if len(line) > _TITLE_CHARS:
        line = line[:_TITLE_CHARS - 1].rstrip() + "…"
    what = case.get("intent") or "post"
    return f"{case.get('source')}: {line}" if line else f"{case.get('source')}: {what} ({case['case_id']})"


def draft(case: Case, posts: dict[str, PostView], target: TargetConfig) -> TicketDraft:
    """The ticket for `case` in `target`'s terms. `posts`: post id -> its joined view (first customer post needed
    for the text and the customer; missing ones are tolerated)."""
    mapping = target.mapping
    first_id = customer_post_ids(case)[0]
    first = message(first_id, posts.get(first_id))
    author = (posts.get(first_id) or {}).get("author") or {}
    private = bool(case.get("private_channel") or case.get("continue_in_private_channel"))
    prefix = tag(mapping.tag_prefix)
    tags = [prefix] + [f"{prefix}:reason:{tag(r)}" for r in case.get("priority_reasons") or []]
    if case.get("topic"):
        tags.append(f"{prefix}:topic:{tag(case['topic'])}")
    if private:
        tags.append(f"{prefix}:private_channel")
    fields: dict[str, str] = {}
    for name, target_field in mapping.fields.items():
        value = _field_value({**case, "private_channel": private}, name)
        if value is not None:
            fields[target_field] = value
    if mapping.label_tags:
        tags += [f"{name}:{tag(case[name])}" for name in LABEL_FIELDS
                 if name not in mapping.fields and name != "topic" and case.get(name)]
    queue = case.get("queue")
    return TicketDraft(
        case_id=case["case_id"], title=_title(case, first), message=first,
        customer=Customer(source=str(case.get("source")), id=author.get("id"), handle=author.get("handle"),
                          name=author.get("name")),
        group=mapping.groups.get(str(queue)) or mapping.groups.get("default"),
        priority=mapping.priorities.get(case.get("priority")) if case.get("priority") else None,
        due_at=case.get("due_at"), tags=list(dict.fromkeys(tags)), fields=fields, private_channel=private,
        raw_text=target.raw_text)
