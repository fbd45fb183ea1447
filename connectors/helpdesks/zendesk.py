"""Zendesk Support, Tickets API v2 (developer.zendesk.com/api-reference/ticketing/tickets/tickets/).

- The customer is an end user upserted by `external_id` (`POST /api/v2/users/create_or_update`, '<source>:<id>'),
  so one social author is one Zendesk user; the first comment is written as them (`comment.author_id`), which
  is how Zendesk tells the customer's message from an agent's reply.
- `POST /api/v2/tickets` with `external_id` = the case id (found again with `GET /api/v2/tickets?external_id=`),
  `subject`, `group_id` (the mapping's group: an id, or a name looked up once in `GET /api/v2/groups`),
  `priority` (low/normal/high/urgent), `tags`, `custom_fields` ([{id, value}]: the mapping names field ids).
- Due date: Zendesk keeps `due_at` only on tickets of type `task`, so a case with a due time becomes a task with
  that `due_at` (its SLA policies, which key on priority and group, keep working); without one the type is left
  to Zendesk's default.
- The raw text goes into an internal note (`PUT /api/v2/tickets/{id}` with a `comment` of `public: false`), or,
  with `raw_text: body`, into the first comment, which is then not public. Follow-ups are one internal note each,
  carrying the `triage-post:` line that `find_followup` looks for in `GET /api/v2/tickets/{id}/comments`.
- Auth: API token, basic auth '<email>/token:<token>'.
"""
from __future__ import annotations

import base64
from typing import Any, Optional
from urllib.parse import quote

from connectors.helpdesks.base import HelpdeskClient, HelpdeskRejected, Message, Ticket, TicketDraft, TicketState, \
    first_post, internal_note, marks_post, ticket_tags
from connectors.config import secret
from connectors.helpdesks.config import ZendeskTarget
from connectors.helpdesks.http import HelpdeskApi, NamedIds
from connectors.http import HttpClient, api_message
from core import safe_json

MAX_PAGES = 20  # comments are read 100 a page; a ticket with more than 2,000 is not looked through further


def _reason(body: bytes) -> str:
    """Zendesk's errors: {"error": "RecordInvalid", "description": ..., "details": {field: [{description}]}}."""
    try:
        data = safe_json.loads(body)
    except ValueError:
        return api_message(body)
    if not isinstance(data, dict):
        return api_message(body)
    details = [d.get("description") for items in (data.get("details") or {}).values() if isinstance(items, list)
               for d in items if isinstance(d, dict) and d.get("description")]
    error = data.get("error")
    head = data.get("description") or (error.get("message") if isinstance(error, dict) else error) or api_message(body)
    return ": ".join([str(head), "; ".join(details)]) if details else str(head)


class ZendeskClient(HelpdeskClient):
    kind = "zendesk"

    def __init__(self, config: ZendeskTarget, http: HttpClient) -> None:
        self.config = config
        user = f"{config.email}/token:{secret(config, 'token_env') or ''}"
        auth = {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()}
        self.api = HelpdeskApi(http, config, auth, f"{config.token_env} and the e-mail {config.email}", _reason)
        self.group_id = NamedIds(config, "group", lambda: {
            g["name"]: int(g["id"]) for g in (self.api.read("/api/v2/groups.json", "groups") or {}).get("groups") or []
            if not g.get("deleted")})

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        found = self.api.read(f"/api/v2/tickets.json?external_id={quote(case_id, safe='')}", "ticket lookup")
        tickets = [t for t in (found or {}).get("tickets") or [] if t.get("external_id") == case_id]
        return self._ticket(min(tickets, key=lambda t: t["id"])) if tickets else None

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        requester = self._requester(draft)
        body, note = first_post(draft)
        ticket: dict[str, Any] = {
            "external_id": draft.case_id, "subject": draft.title, "requester_id": requester,
            "comment": {"body": body, "author_id": requester, "public": draft.raw_text != "body"},
            "tags": ticket_tags(draft, self.config.mapping.tag_prefix),
        }
        if draft.group:
            ticket["group_id"] = self.group_id(draft.group)
        if draft.priority:
            ticket["priority"] = draft.priority
        if draft.due_at:
            ticket.update(type="task", due_at=draft.due_at)
        if draft.fields:
            ticket["custom_fields"] = [{"id": int(k) if k.isdigit() else k, "value": v}
                                       for k, v in draft.fields.items()]
        created = self._ticket((self.api.send("POST", "/api/v2/tickets.json", "create ticket", {"ticket": ticket})
                                or {}).get("ticket") or {})
        if note:
            self._note(created, note, "internal note")
        return created

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        path: Optional[str] = f"/api/v2/tickets/{quote(ticket.id)}/comments.json?per_page=100"
        for _ in range(MAX_PAGES):
            page = self.api.read(path or "", "comment lookup") or {}
            for comment in page.get("comments") or []:
                if not comment.get("public") and marks_post(comment.get("body"), post_id):
                    return str(comment["id"])
            following = page.get("next_page")
            if not following:
                return None
            path = following[following.index("/api/"):]
        return None

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        return self._note(ticket, internal_note(message, "internal_note", followup=True), "follow-up note")

    def ticket_state(self, ticket: Ticket) -> TicketState:
        shown = (self.api.read(f"/api/v2/tickets/{quote(ticket.id)}.json", "ticket state") or {}).get("ticket") or {}
        comments = (self.api.read(f"/api/v2/tickets/{quote(ticket.id)}/comments.json?per_page=100",
                                  "ticket state") or {}).get("comments") or []
        replies = [c for c in comments[1:] if c.get("public") and c.get("author_id") != shown.get("requester_id")]
        answered_at = replies[0].get("created_at") if replies else None
        status = "closed" if shown.get("status") in ("solved", "closed") else "answered" if answered_at else "open"
        assignee = shown.get("assignee_id") or shown.get("group_id")
        return TicketState(status, answered_at, str(assignee) if assignee else None)

    def _requester(self, draft: TicketDraft) -> int:
        customer = draft.customer
        user = {"name": customer.name or customer.handle or customer.external_id, "external_id": customer.external_id}
        found = (self.api.send("POST", "/api/v2/users/create_or_update.json", "customer", {"user": user}) or {})
        if not (found.get("user") or {}).get("id"):
            raise HelpdeskRejected(502, f"zendesk target {self.config.name}: the user answer has no id")
        return int(found["user"]["id"])

    def _note(self, ticket: Ticket, text: str, what: str) -> str:
        update = {"ticket": {"comment": {"body": text, "public": False}}}
        answer = self.api.send("PUT", f"/api/v2/tickets/{quote(ticket.id)}.json", what, update) or {}
        events = [e for e in (answer.get("audit") or {}).get("events") or [] if e.get("type") == "Comment"]
        return str(events[0]["id"]) if events else ""

    def _ticket(self, data: dict[str, Any]) -> Ticket:
        if not data.get("id"):
            raise HelpdeskRejected(502, f"zendesk target {self.config.name}: the ticket answer has no id")
        return Ticket(str(data["id"]), f"{self.config.url.rstrip('/')}/agent/tickets/{data['id']}")
