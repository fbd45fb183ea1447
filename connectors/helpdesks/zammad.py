"""Zammad, REST API v1 (docs.zammad.org/en/latest/api/ticket/, .../ticket/articles.html; Zammad 6.x).

- External reference: Zammad has no external-id field, so the case id travels as a tag, `<tag_prefix>-case-<hex>`
  (the case id with its `case:` made tag-safe), set in the same `POST /api/v1/tickets` that creates the ticket
  (its comma-separated `tags`): a ticket never exists without it. `find_ticket` searches
  `GET /api/v1/tickets/search?query=tags:"..."`, which Zammad answers from its Elasticsearch index (required for
  search; it indexes within a second or two, so the handoff's lookup after an uncertain create should not be
  immediate).
- The ticket: `title`, `group` and `priority` by name (Zammad resolves names; its priorities are '1 low',
  '2 normal', '3 high'), the customer by a synthetic e-mail `<source>.<id>@customer_email_domain` with Zammad's
  `guess:` syntax (found or created; social customers have no e-mail), mapped custom fields as ticket
  attributes, the first `article` (type `note`, sender Customer) with the public text and link, internal when
  `raw_text: body` puts the raw text there.
- Due date: Zammad computes escalation from its SLAs (per group/priority); it takes no due date through the API,
  so the due time is written into the internal note.
- Internal note and follow-ups: `POST /api/v1/ticket_articles` with `internal: true`, carrying the
  `triage-post:` line that `find_followup` looks for in `GET /api/v1/ticket_articles/by_ticket/{id}`.
- Auth: an access token, `Authorization: Token token=<token>`.
"""
from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import quote

from connectors.helpdesks.base import HelpdeskClient, HelpdeskRejected, Message, Ticket, TicketDraft, TicketState, \
    first_post, internal_note, marks_post, ticket_tags
from connectors.config import secret
from connectors.helpdesks.config import ZammadTarget
from connectors.helpdesks.http import HelpdeskApi, json_reason
from connectors.http import HttpClient


class ZammadClient(HelpdeskClient):
    kind = "zammad"

    def __init__(self, config: ZammadTarget, http: HttpClient) -> None:
        self.config = config
        auth = {"Authorization": f"Token token={secret(config, 'token_env') or ''}"}
        self.api = HelpdeskApi(http, config, auth, config.token_env, json_reason("error_human", "error"))

    def case_tag(self, case_id: str) -> str:
        """The tag that is the ticket's external reference."""
        return f"{self.config.mapping.tag_prefix}-case-{re.sub(r'[^A-Za-z0-9_-]', '-', case_id.removeprefix('case:'))}"

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        query = quote(f'tags:"{self.case_tag(case_id)}"', safe="")
        found = self.api.read(f"/api/v1/tickets/search?query={query}&limit=10", "ticket lookup") or {}
        ids = found.get("tickets") if isinstance(found, dict) else [t.get("id") for t in found]
        return self._ticket(min(int(i) for i in ids)) if ids else None

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        due = (f"Due: {draft.due_at}",) if draft.due_at else ()
        body, note = first_post(draft, extra=due)
        customer = re.sub(r"[^A-Za-z0-9._-]", "-", draft.customer.external_id.replace(":", "."))
        ticket: dict[str, Any] = {
            **draft.fields, "title": draft.title,
            "customer_id": f"guess:{customer}@{self.config.customer_email_domain}",
            "tags": ",".join([self.case_tag(draft.case_id), *ticket_tags(draft, self.config.mapping.tag_prefix)]),
            "article": {"subject": draft.title, "body": body, "type": "note", "sender": "Customer",
                        "content_type": "text/plain", "internal": draft.raw_text == "body"},
        }
        if draft.group:
            ticket["group"] = draft.group
        if draft.priority:
            ticket["priority"] = draft.priority
        created = self.api.send("POST", "/api/v1/tickets", "create ticket", ticket) or {}
        if not created.get("id"):
            raise HelpdeskRejected(502, f"zammad target {self.config.name}: the ticket answer has no id")
        result = self._ticket(int(created["id"]))
        if note:
            self._note(result, note, "internal note")
        return result

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        articles = self.api.read(f"/api/v1/ticket_articles/by_ticket/{quote(ticket.id)}", "article lookup") or []
        return next((str(a["id"]) for a in articles if a.get("internal") and marks_post(a.get("body"), post_id)), None)

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        return self._note(ticket, internal_note(message, "internal_note", followup=True), "follow-up note")

    def ticket_state(self, ticket: Ticket) -> TicketState:
        shown = self.api.read(f"/api/v1/tickets/{quote(ticket.id)}?expand=true", "ticket state") or {}
        answered_at = shown.get("first_response_at")
        closed = shown.get("state") in ("closed", "merged", "removed")
        assignee = shown.get("owner") if shown.get("owner") not in (None, "-") else shown.get("group")
        return TicketState("closed" if closed else "answered" if answered_at else "open", answered_at, assignee)

    def _note(self, ticket: Ticket, text: str, what: str) -> str:
        article = {"ticket_id": int(ticket.id), "body": text, "type": "note", "internal": True,
                   "content_type": "text/plain"}
        made = self.api.send("POST", "/api/v1/ticket_articles", what, article) or {}
        return str(made.get("id", ""))

    def _ticket(self, ticket_id: int) -> Ticket:
        return Ticket(str(ticket_id), f"{self.config.url.rstrip('/')}/#ticket/zoom/{ticket_id}")
