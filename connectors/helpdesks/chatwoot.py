"""Chatwoot, application API v1 (developers.chatwoot.com/api-reference, Chatwoot 3.x/4.x), one API inbox.

- The customer is a contact with `identifier` '<source>:<id>' (`GET .../contacts/search?q=`, else
  `POST .../contacts` with the inbox; a "taken" answer from a concurrent create is looked up again).
- `POST /api/v1/accounts/{account}/conversations` with `inbox_id`, `contact_id`, `status: open`, the first
  message (the public text and link; a conversation has no internal body, so `raw_text: body` is treated as
  `internal_note`: the raw text always goes into a private note), and `custom_attributes` holding the case id
  under `case_id_attribute` (a conversation custom attribute of type text created for it) and the mapped fields,
  all in the one creating request.
- Then, each idempotent and so retried like a lookup: the team (`POST .../conversations/{id}/assignments` with
  `team_id`: an id, or a name looked up once in `GET .../teams`), the labels (`POST .../labels`, the tags) and
  the priority (`POST .../toggle_priority`: urgent/high/medium/low). A crash between these and the creation
  leaves the conversation without them; the handoff finds it by the case id and does not send it again.
- `find_ticket`: `POST .../conversations/filter` on the custom attribute (`equal_to`).
- The raw text and follow-ups: `POST .../conversations/{id}/messages` with `private: true` (a private note),
  carrying the `triage-post:` line that `find_followup` looks for in `GET .../messages`.
- Polling: `GET .../conversations/{id}` (`status` resolved, `first_reply_created_at`, the assignee or team).
- Auth: the `api_access_token` header (an agent's or an agent bot's access token).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Optional
from urllib.parse import quote

from connectors.helpdesks.base import HelpdeskClient, HelpdeskRejected, Message, Ticket, TicketDraft, TicketState, \
    first_post, internal_note, marks_post, ticket_tags
from connectors.config import secret
from connectors.helpdesks.config import ChatwootTarget
from connectors.helpdesks.http import HelpdeskApi, NamedIds, json_reason
from connectors.http import HttpClient
from core.timestamps import utc_iso

PRIORITIES = ("urgent", "high", "medium", "low")


class ChatwootClient(HelpdeskClient):
    kind = "chatwoot"

    def __init__(self, config: ChatwootTarget, http: HttpClient) -> None:
        self.config = config
        self.api = HelpdeskApi(http, config, {"api_access_token": secret(config, "token_env") or ""},
                               config.token_env, json_reason("message", "error"))
        self.account = f"/api/v1/accounts/{config.account_id}"
        self.team_id = NamedIds(config, "team", lambda: {
            t["name"]: int(t["id"]) for t in self.api.read(f"{self.account}/teams", "teams") or []})

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        condition = {"attribute_key": self.config.case_id_attribute, "filter_operator": "equal_to",
                     "values": [case_id], "query_operator": None}
        found = self.api.read(f"{self.account}/conversations/filter", "conversation lookup", "POST",
                              {"payload": [condition]}) or {}
        ids = [int(c["id"]) for c in found.get("payload") or []
               if (c.get("custom_attributes") or {}).get(self.config.case_id_attribute) == case_id]
        return self._ticket(min(ids)) if ids else None

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        body, note = first_post(replace(draft, raw_text="internal_note"))
        if draft.priority and draft.priority not in PRIORITIES:  # refused before anything is created
            raise HelpdeskRejected(422, f"chatwoot target {self.config.name}: priority {draft.priority!r} is not one "
                                        f"of {', '.join(PRIORITIES)} (mapping.priorities)")
        team = self.team_id(draft.group) if draft.group else None
        conversation = {"inbox_id": self.config.inbox_id, "contact_id": self._contact(draft), "status": "open",
                        "custom_attributes": {**draft.fields, self.config.case_id_attribute: draft.case_id},
                        "message": {"content": body}}
        created = self.api.send("POST", f"{self.account}/conversations", "create conversation", conversation) or {}
        if not created.get("id"):
            raise HelpdeskRejected(502, f"chatwoot target {self.config.name}: the conversation answer has no id")
        ticket = self._ticket(int(created["id"]))
        path = f"{self.account}/conversations/{created['id']}"
        if team is not None:
            self.api.read(f"{path}/assignments", "team assignment", "POST", {"team_id": team})
        tags = ticket_tags(draft, self.config.mapping.tag_prefix)
        if tags:
            self.api.read(f"{path}/labels", "labels", "POST", {"labels": tags})
        if draft.priority:
            self.api.read(f"{path}/toggle_priority", "priority", "POST", {"priority": draft.priority})
        if note:
            self._note(ticket, note, "private note")
        return ticket

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        found = self.api.read(f"{self.account}/conversations/{quote(ticket.id)}/messages", "message lookup") or {}
        return next((str(m["id"]) for m in found.get("payload") or []
                     if m.get("private") and marks_post(m.get("content"), post_id)), None)

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        return self._note(ticket, internal_note(message, "internal_note", followup=True), "follow-up note")

    def ticket_state(self, ticket: Ticket) -> TicketState:
        shown = self.api.read(f"{self.account}/conversations/{quote(ticket.id)}", "conversation state") or {}
        first_reply = shown.get("first_reply_created_at")
        answered_at = utc_iso(datetime.fromtimestamp(int(first_reply), timezone.utc)) if first_reply else None
        status = "closed" if shown.get("status") == "resolved" else "answered" if answered_at else "open"
        meta = shown.get("meta") or {}
        assignee = (meta.get("assignee") or {}).get("name") or (meta.get("team") or {}).get("name")
        return TicketState(status, answered_at, assignee)

    def _contact(self, draft: TicketDraft) -> int:
        identifier = draft.customer.external_id
        found = self._find_contact(identifier)
        if found:
            return found
        contact = {"inbox_id": self.config.inbox_id, "identifier": identifier,
                   "name": draft.customer.name or draft.customer.handle or identifier}
        try:
            created = self.api.send("POST", f"{self.account}/contacts", "create contact", contact) or {}
        except HelpdeskRejected as exc:
            found = self._find_contact(identifier) if exc.status == 422 else None  # created meanwhile
            if found:
                return found
            raise
        made = ((created.get("payload") or {}).get("contact") or {}).get("id")
        if not made:
            raise HelpdeskRejected(502, f"chatwoot target {self.config.name}: the contact answer has no id")
        return int(made)

    def _find_contact(self, identifier: str) -> Optional[int]:
        found = self.api.read(f"{self.account}/contacts/search?q={quote(identifier, safe='')}", "contact lookup") or {}
        return next((int(c["id"]) for c in found.get("payload") or [] if c.get("identifier") == identifier), None)

    def _note(self, ticket: Ticket, text: str, what: str) -> str:
        message = {"content": text, "message_type": "outgoing", "private": True}
        made = self.api.send("POST", f"{self.account}/conversations/{quote(ticket.id)}/messages", what, message) or {}
        return str(made.get("id", ""))

    def _ticket(self, conversation_id: int) -> Ticket:
        app = f"{self.config.url.rstrip('/')}/app/accounts/{self.config.account_id}"
        return Ticket(str(conversation_id), f"{app}/conversations/{conversation_id}")
