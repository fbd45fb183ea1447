"""What every helpdesk client shares: the ticket to write, the answers it can give, and the errors.

Why this split: the handoff (apps/handoff.py) owns "exactly once": it records a ticket as being created before
the request leaves and, after a crash or an uncertain answer, asks the helpdesk for the case's ticket by its
external reference (`find_ticket`) before creating it again. A client therefore only speaks its API: it never
retries a creating request on its own, and it tells the caller which failures are worth waiting out
(`HelpdeskUnavailable`: down, 5xx, 429 with the wait it asked for) and which are final for this payload
(`HelpdeskRejected`: any other 4xx, with the helpdesk's own reason, so it can become a dead letter).
"""
from __future__ import annotations

import html
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Optional


class HelpdeskError(RuntimeError):
    """Base of the errors below; messages never carry a token or the customer's text."""


class HelpdeskUnavailable(HelpdeskError):
    """Down, unreachable, 5xx, or rate-limited: try again later. `retry_after_s` is what the helpdesk asked for
    (429 Retry-After), else None. A creating request that ends like this may have created the ticket: the
    caller looks it up before sending it again."""

    def __init__(self, message: str, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HelpdeskRejected(HelpdeskError):
    """The helpdesk refused this payload (4xx other than 429): sending it again cannot help. `status` and the
    helpdesk's `reason` go into the dead letter."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Customer:
    """Who wrote, as the channel knows them (personal data: it stays inside the helpdesk)."""
    source: str  # the Post source, e.g. "x", "facebook"
    id: Optional[str]  # the author's native id on that channel
    handle: Optional[str]
    name: Optional[str]

    @property
    def external_id(self) -> str:
        """A stable identifier for the helpdesk's customer/contact record: '<source>:<id or handle>'."""
        return f"{self.source}:{self.id or self.handle or 'unknown'}"


@dataclass(frozen=True)
class Message:
    """One customer post as the helpdesk receives it (the ticket's first message or a follow-up).

    `public_text` is the redacted text (safe anywhere); `internal_text` the raw text, which may hold personal data
    and goes only to the helpdesk's internal side (an internal note, or the ticket body when the target's
    `raw_text` is `body`); None when the raw text is not available (deleted, or private index off)."""
    post_id: str
    created_at: str  # RFC 3339
    public_text: str
    internal_text: Optional[str]
    link: Optional[str]  # the post on its channel


@dataclass(frozen=True)
class TicketDraft:
    """A new ticket for one case, with the target's mapping already applied (values in the target's terms)."""
    case_id: str  # the ticket's external reference: one ticket per case, found again by it
    title: str
    message: Message  # the case's first customer post
    customer: Customer
    group: Optional[str]  # the target's group/team (name or id, as the mapping gives it)
    priority: Optional[str]  # the target's priority value
    due_at: Optional[str]  # RFC 3339; the target's due date / SLA field
    tags: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # custom fields: language, sentiment, intent, ... mapped
    private_channel: bool = False  # the case carries personal data: continue in a private channel (marked)
    raw_text: str = "internal_note"  # where internal_text goes: "internal_note" | "body"


@dataclass(frozen=True)
class Ticket:
    """A ticket in the helpdesk: its id there, and a link agents can open (None when the API gives none)."""
    id: str
    url: Optional[str] = None


@dataclass(frozen=True)
class TicketState:
    """What the helpdesk says of a ticket now (bounded polling, for targets that cannot call back)."""
    status: str  # "open" | "answered" | "closed"
    answered_at: Optional[str] = None  # RFC 3339 of the first agent reply to the customer, if any
    assignee: Optional[str] = None  # agent or group it is assigned to now


class HelpdeskClient(ABC):
    """One helpdesk API. `kind` is the target kind in the handoff file; `config` the target's entry."""
    kind = "helpdesk"

    @abstractmethod
    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        """The ticket whose external reference is `case_id`, if one exists (raises HelpdeskUnavailable)."""

    @abstractmethod
    def create_ticket(self, draft: TicketDraft) -> Ticket:
        """Create the case's ticket, once: never retried here (raises HelpdeskUnavailable / HelpdeskRejected)."""

    @abstractmethod
    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        """The id of the article/comment/message already added for `post_id`, if any."""

    @abstractmethod
    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        """Add a follow-up customer post to the ticket (internal note for internal_text); returns its id there."""

    def ticket_state(self, ticket: Ticket) -> TicketState:
        """For polling mode; targets that call back need not implement it."""
        raise NotImplementedError(f"{self.kind} is heard back through its webhooks, not polled")


# ---- the texts every client writes (so an agent sees the same lines in any helpdesk, and lookups find them) -----

POST_MARKER = "triage-post:"  # the line naming the post an article was written for: find_followup searches it


def public_body(message: Message) -> str:
    """The public part of a customer post: the redacted text and the link to it on its channel."""
    return "\n\n".join(part for part in (message.public_text, message.link) if part)


def internal_note(message: Message, raw_text: str, private_channel: bool = False, followup: bool = False,
                  extra: tuple[str, ...] = ()) -> str:
    """An internal note for a post: for a follow-up its public part too (one article per post, written at once),
    the raw text when it is to go into a note, the private-channel line, `extra` lines, and the post marker."""
    parts = [f"Follow-up from the customer:\n{public_body(message)}"] if followup else []
    if message.internal_text and raw_text == "internal_note":
        parts.append(f"Original text (personal data, internal only):\n{message.internal_text}")
    if private_channel:
        parts.append("Private channel: this case carries personal data; continue with the customer in a private "
                     "channel, never in public.")
    parts.append("\n".join((*extra, f"{POST_MARKER} {message.post_id}")))
    return "\n\n".join(parts)


def marks_post(text: Optional[str], post_id: str) -> bool:
    """Whether an article's text (plain, or HTML as Freshdesk and Zendesk's html_body give it back) carries the
    marker line of `post_id`."""
    lines = re.sub(r"<br\s*/?>|</p>|</div>", "\n", text or "").replace("\r", "").split("\n")
    return any(html.unescape(re.sub(r"<[^>]+>", "", line)).strip() == f"{POST_MARKER} {post_id}" for line in lines)


def first_post(draft: TicketDraft, extra: tuple[str, ...] = ()) -> tuple[str, Optional[str]]:
    """The ticket's body and its internal note (None when there is nothing to note) for the case's first post.

    `raw_text: internal_note`: the body is the public part, the note holds the raw text, the private-channel line,
    `extra` and the post marker. `raw_text: body`: all of it is the body (the client keeps that body internal where
    the API can), no note: one request, nothing to lose between two."""
    message = draft.message
    if draft.raw_text == "body":
        text = replace(message, public_text=message.internal_text or message.public_text)
        return f"{public_body(text)}\n\n{internal_note(message, 'body', draft.private_channel, extra=extra)}", None
    if message.internal_text or draft.private_channel or extra:
        return public_body(message), internal_note(message, draft.raw_text, draft.private_channel, extra=extra)
    return public_body(message), None


def ticket_tags(draft: TicketDraft, tag_prefix: str) -> list[str]:
    """The draft's tags, plus `<prefix>-private-channel` on a case that must continue in a private channel."""
    private = {f"{tag_prefix}-private-channel"} if draft.private_channel else set()
    return sorted(set(draft.tags) | private)
