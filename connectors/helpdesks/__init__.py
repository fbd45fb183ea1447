"""Helpdesk APIs the handoff writes tickets to (Zammad, Zendesk, Freshdesk, Chatwoot, a signed webhook).

Each module holds one API's client, a `HelpdeskClient` (base.py); `client_for` picks it by the target's `kind`.
The handoff itself (which case becomes which ticket, once) is apps/handoff.py; hearing back is
apps/helpdesk_events.py.
"""
