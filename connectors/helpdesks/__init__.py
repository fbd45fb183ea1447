"""Helpdesk APIs the handoff writes tickets to (Zammad, Zendesk, Freshdesk, Chatwoot, a signed webhook).

Each module holds one API's client, a `HelpdeskClient` (base.py); `client_for` picks it by the target's `kind`.
The handoff itself (which case becomes which ticket, once) is apps/handoff.py; hearing back is
apps/helpdesk_events.py.
"""
from __future__ import annotations

from connectors.helpdesks.base import HelpdeskClient
from connectors.helpdesks.chatwoot import ChatwootClient
from connectors.helpdesks.config import TargetConfig
from connectors.helpdesks.freshdesk import FreshdeskClient
from connectors.helpdesks.webhook import WebhookClient
from connectors.helpdesks.zammad import ZammadClient
from connectors.helpdesks.zendesk import ZendeskClient
from connectors.http import HttpClient

CLIENTS: dict[str, type[HelpdeskClient]] = {client.kind: client for client in (
    ZammadClient, ZendeskClient, FreshdeskClient, ChatwootClient, WebhookClient)}


def client_for(target: TargetConfig, http: HttpClient) -> HelpdeskClient:
    """The client of a handoff.yaml target (its token read from the environment variable it names)."""
    return CLIENTS[target.kind](target, http)  # type: ignore[call-arg]
