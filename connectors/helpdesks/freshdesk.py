"""Freshdesk, API v2 (developers.freshdesk.com/api/).

- `POST /api/v2/tickets`: the requester by `name` + `unique_external_id` ('<source>:<id>': social customers have
  no e-mail or phone), `subject`, `description` (HTML: the public text and link, or with `raw_text: body` the raw
  text), `status` 2 (open), `priority` 1-4 (the mapping's value), `group_id` (an id, or a name looked up once in
  `GET /api/v2/groups`), `due_by` and `fr_due_by` (both the case's due time: Freshdesk wants the first-response
  due no later than the resolution due), `tags`, and `custom_fields` with the case id in `case_id_field` (a
  custom single-line text field created for it) and the mapped fields.
- `find_ticket`: `GET /api/v2/search/tickets?query="<case_id_field>:'<case id>'"`. Freshdesk's search index lags
  writes (documented: up to a few minutes), so a lookup right after an uncertain create can miss the ticket; the
  handoff should wait that long before creating again.
- The raw text and follow-ups: `POST /api/v2/tickets/{id}/notes` with `private: true`, carrying the
  `triage-post:` line that `find_followup` looks for in `GET /api/v2/tickets/{id}/conversations`.
- Polling: `GET /api/v2/tickets/{id}?include=stats` (status 4 resolved / 5 closed, `stats.first_responded_at`).
- Auth: basic auth with the API key as user and 'X' as password.
"""
from __future__ import annotations

import base64
import html
from typing import Any, Optional
from urllib.parse import quote

from connectors.helpdesks.base import HelpdeskClient, HelpdeskRejected, Message, Ticket, TicketDraft, TicketState, \
    first_post, internal_note, marks_post, ticket_tags
from connectors.config import secret
from connectors.helpdesks.config import FreshdeskTarget
from connectors.helpdesks.http import HelpdeskApi, NamedIds
from connectors.http import HttpClient, api_message
from core import safe_json


def _reason(body: bytes) -> str:
    """Freshdesk's errors: {"description": "Validation failed", "errors": [{field, message, code}]} or
    {"code", "message"}."""
    try:
        data = safe_json.loads(body)
    except ValueError:
        return api_message(body)
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in data["errors"] if isinstance(e, dict))
        return f"{data.get('description') or 'error'}: {fields}"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return api_message(body)


def _html(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


class FreshdeskClient(HelpdeskClient):
    kind = "freshdesk"

    def __init__(self, config: FreshdeskTarget, http: HttpClient) -> None:
        self.config = config
        key = f"{secret(config, 'token_env') or ''}:X"
        auth = {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}
        self.api = HelpdeskApi(http, config, auth, config.token_env, _reason)
        self.group_id = NamedIds(config, "group", lambda: {
            g["name"]: int(g["id"]) for g in self.api.read("/api/v2/groups?per_page=100", "groups") or []})

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        field = self.config.case_id_field
        query = quote(f"\"{field}:'{case_id}'\"", safe="")
        found = self.api.read(f"/api/v2/search/tickets?query={query}", "ticket lookup") or {}
        ids = [int(t["id"]) for t in found.get("results") or [] if (t.get("custom_fields") or {}).get(field) == case_id]
        return self._ticket(min(ids)) if ids else None

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        body, note = first_post(draft)
        customer = draft.customer
        ticket: dict[str, Any] = {
            "name": customer.name or customer.handle or customer.external_id,
            "unique_external_id": customer.external_id, "subject": draft.title, "description": _html(body),
            "status": 2, "tags": ticket_tags(draft, self.config.mapping.tag_prefix),
            "custom_fields": {**draft.fields, self.config.case_id_field: draft.case_id},
        }
        if draft.priority:
            ticket["priority"] = int(draft.priority) if draft.priority.isdigit() else draft.priority
        if draft.group:
            ticket["group_id"] = self.group_id(draft.group)
        if draft.due_at:
            ticket.update(due_by=draft.due_at, fr_due_by=draft.due_at)
        created = self.api.send("POST", "/api/v2/tickets", "create ticket", ticket) or {}
        if not created.get("id"):
            raise HelpdeskRejected(502, f"freshdesk target {self.config.name}: the ticket answer has no id")
        result = self._ticket(int(created["id"]))
        if note:
            self._note(result, note, "internal note")
        return result

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        found = self.api.read(f"/api/v2/tickets/{quote(ticket.id)}/conversations", "note lookup") or []
        return next((str(c["id"]) for c in found
                     if c.get("private") and marks_post(c.get("body") or c.get("body_text"), post_id)), None)

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        return self._note(ticket, internal_note(message, "internal_note", followup=True), "follow-up note")

    def ticket_state(self, ticket: Ticket) -> TicketState:
        shown = self.api.read(f"/api/v2/tickets/{quote(ticket.id)}?include=stats", "ticket state") or {}
        answered_at = (shown.get("stats") or {}).get("first_responded_at")
        status = "closed" if shown.get("status") in (4, 5) else "answered" if answered_at else "open"
        assignee = shown.get("responder_id") or shown.get("group_id")
        return TicketState(status, answered_at, str(assignee) if assignee else None)

    def _note(self, ticket: Ticket, text: str, what: str) -> str:
        made = self.api.send("POST", f"/api/v2/tickets/{quote(ticket.id)}/notes", what,
                             {"body": _html(text), "private": True}) or {}
        return str(made.get("id", ""))

    def _ticket(self, ticket_id: int) -> Ticket:
        return Ticket(str(ticket_id), f"{self.config.url.rstrip('/')}/a/tickets/{ticket_id}")
