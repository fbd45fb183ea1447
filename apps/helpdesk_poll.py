"""Bounded polling, for helpdesks that cannot call back: the same changes as their webhooks would make.

For each target with `poll_every_s`, every round reads one page (at most `page_size`) of the cases handed to it
(`handoff.<target>.state: created`) that are not closed, in case id order after where the last round stopped
(wrapping around at the end), so one round costs at most `page_size` ticket look-ups however many cases there are,
and every open case is visited within ceil(cases / page_size) rounds. For each, `client.ticket_state(ticket)`
(connectors/helpdesks/base.py) says whether an agent answered (the first agent reply's time), whether the ticket is
closed and who holds it; apps/helpdesk_events.py writes that into the case with optimistic concurrency. An answer
is keyed by its time (`first-reply:<time>`), so polling the same ticket again changes nothing.

A helpdesk that is down (HelpdeskUnavailable) ends the round for that target; the next round starts again where it
stopped. What polling cannot see: answers after the first one (a state carries only the first reply's time), and
the exact time of a close or reassignment (taken as the round's time).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from apps.helpdesk_events import Event, HelpdeskCases, write_events
from connectors.helpdesks.base import HelpdeskClient, HelpdeskUnavailable, Ticket, TicketState
from core.timestamps import utc_now

log = logging.getLogger(__name__)


def events_of(state: TicketState, now: str) -> list[Event]:
    """What a ticket's state says, as the events a webhook would have brought."""
    events = [Event("assigned", now, state.assignee)]
    if state.answered_at:
        events.append(Event("answered", state.answered_at, None, f"first-reply:{state.answered_at}"))
    if state.status == "closed":
        events.append(Event("closed", now))
    return events


@dataclass
class Poller:
    """One target's polling: `poll_once` is one bounded round; `cursor` is where the next one starts."""
    target: str
    client: HelpdeskClient
    cases: HelpdeskCases
    page_size: int = 100
    cursor: Optional[str] = None

    def poll_once(self, now: Callable[[], str] = utc_now) -> int:
        """One round; returns how many cases changed."""
        page = self.cases.handed_off(self.target, self.cursor, self.page_size)
        changed = 0
        for case in page:
            mapping = (case.get("handoff") or {}).get(self.target) or {}
            ticket = Ticket(str(mapping["ticket_id"]), mapping.get("ticket_url"))
            try:
                state = self.client.ticket_state(ticket)
            except HelpdeskUnavailable as exc:
                log.warning("helpdesk not polled", extra={"fields": {"target": self.target, "reason": str(exc)}})
                return changed  # the cursor stays: the next round starts with this case
            changed += write_events(self.cases, case["case_id"], self.target, events_of(state, now()))
            self.cursor = case["case_id"]
        if len(page) < self.page_size:
            self.cursor = None  # the end: the next round starts from the first case again
        log.info("helpdesk polled", extra={"fields": {"target": self.target, "cases": len(page), "changed": changed}})
        return changed


def run(pollers: dict[str, tuple[Poller, float]], stop: threading.Event,
        clock: Callable[[], float] = time.monotonic) -> None:
    """Poll each target every its `poll_every_s` seconds until `stop` is set."""
    due = {name: clock() for name in pollers}
    while pollers and not stop.is_set():
        for name, (poller, every_s) in pollers.items():
            if due[name] <= clock():
                try:
                    poller.poll_once()
                except Exception as exc:  # the cases index: try again next round
                    log.warning("helpdesk poll failed", extra={"fields": {"target": name, "error": type(exc).__name__}})
                due[name] = clock() + every_s
        stop.wait(max(0.0, min(due.values()) - clock()))
