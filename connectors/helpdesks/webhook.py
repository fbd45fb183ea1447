"""The generic signed webhook, for systems without a public API of their own (a contact-center suite's inbound
interface, an in-house desk). Triage's own format, version 1:

    POST <url>   Content-Type: application/json
    X-Triage-Timestamp: <unix seconds>
    X-Triage-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the shared secret (secret_env)>
    X-Triage-Delivery: <stable id: the same for every attempt of one event>

    {"event": "ticket.create", "delivery_id": ..., "case_id": ...,
     "ticket": {"title", "group", "priority", "due_at", "tags", "fields", "private_channel"},
     "customer": {"source", "id", "handle", "name", "external_id"},
     "message": {"post_id", "created_at", "text", "link", "internal_text"}, "raw_text": "internal_note" | "body"}
    {"event": "ticket.followup", "delivery_id": ..., "ticket_id": ..., "message": {...}}

`message.text` is the redacted text, `message.internal_text` the raw one (personal data: the receiver keeps it on
its internal side, as `raw_text` says). The receiver verifies the signature, refuses old timestamps, and must
dedupe on X-Triage-Delivery: a webhook cannot be asked what it already holds, so `find_ticket`/`find_followup`
know nothing and the handoff's retry sends the event again; delivery is at-least-once with a stable delivery id.
A receiver that answers {"ticket_id": ...} gives the ticket its id there (else the delivery id stands for it).
Any 2xx is success; 429/5xx/no answer are waited out; other 4xx are the receiver's refusal.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Optional

from connectors.helpdesks.base import HelpdeskClient, Message, Ticket, TicketDraft
from connectors.config import secret
from connectors.helpdesks.config import WebhookTarget
from connectors.helpdesks.http import HelpdeskApi
from connectors.http import HttpClient


def signature(secret_value: str, timestamp: str, body: bytes) -> str:
    """The X-Triage-Signature value of a body sent at `timestamp` (receivers compute the same to check it)."""
    return "sha256=" + hmac.new(secret_value.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookClient(HelpdeskClient):
    kind = "webhook"

    def __init__(self, config: WebhookTarget, http: HttpClient) -> None:
        self.config = config
        self.api = HelpdeskApi(http, config, {}, config.secret_env)  # base: the whole URL

    def delivery_id(self, event: str, key: str, post_id: str) -> str:
        """Stable over attempts and restarts: the target, the event, the case or ticket, the post."""
        return hashlib.sha256(f"{self.config.name}|{event}|{key}|{post_id}".encode()).hexdigest()[:32]

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        return None  # a webhook cannot be asked: the stable delivery id makes a second send harmless

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        delivery = self.delivery_id("ticket.create", draft.case_id, draft.message.post_id)
        customer = draft.customer
        answer = self._post(delivery, {
            "event": "ticket.create", "delivery_id": delivery, "case_id": draft.case_id,
            "ticket": {"title": draft.title, "group": draft.group, "priority": draft.priority, "due_at": draft.due_at,
                       "tags": draft.tags, "fields": draft.fields, "private_channel": draft.private_channel},
            "customer": {"source": customer.source, "id": customer.id, "handle": customer.handle,
                         "name": customer.name, "external_id": customer.external_id},
            "message": _message(draft.message), "raw_text": draft.raw_text})
        return Ticket(str(answer.get("ticket_id") or delivery) if isinstance(answer, dict) else delivery)

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        return None

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        delivery = self.delivery_id("ticket.followup", ticket.id, message.post_id)
        self._post(delivery, {"event": "ticket.followup", "delivery_id": delivery, "ticket_id": ticket.id,
                              "message": _message(message), "raw_text": "internal_note"})
        return delivery

    def _post(self, delivery: str, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Triage-Timestamp": stamp, "X-Triage-Delivery": delivery,
                   "X-Triage-Signature": signature(secret(self.config, "secret_env") or "", stamp, body)}
        return self.api.send("POST", "", payload["event"], body, headers, expect_json=False)


def _message(message: Message) -> dict[str, Any]:
    return {"post_id": message.post_id, "created_at": message.created_at, "text": message.public_text,
            "link": message.link, "internal_text": message.internal_text}
