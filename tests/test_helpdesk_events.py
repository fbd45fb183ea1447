"""Hearing back from the helpdesks (apps/helpdesk_events.py, apps/helpdesk_poll.py).

Each helpdesk's deliveries are built here as its documentation describes them (signature scheme, headers, payload
shape), independently of the receiver's code: Zammad's X-Hub-Signature HMAC-SHA1, Zendesk's base64 HMAC-SHA256 of
timestamp + body, Freshdesk's shared secret header, Chatwoot's and the generic webhook's sha256 HMAC of
"<timestamp>.<body>". The fast tests use an in-memory case store; one integration test runs the whole path on the
live cases index: a case, a Zendesk-signed webhook over HTTP, then the channel's own later answer.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from apps.helpdesk_events import MAX_BODY_BYTES, HelpdeskEvents, HelpdeskEventsServer
from apps.helpdesk_poll import Poller
from connectors.helpdesks.base import HelpdeskClient, HelpdeskUnavailable, Ticket, TicketState
from connectors.helpdesks.config import HandoffConfig
from core.config import Settings
from test_cases import AGAIN, ANSWER, CANCEL, CASE_SCHEMA, MONDAY_10, QUESTION, _at
from triage.cases import Case, case_key, merge, merge_all

SECRET = "hook-secret-do-not-log"
TICKET = "501"
NOW = (MONDAY_10 + timedelta(minutes=20)).timestamp()  # the receiver's clock: 20 minutes after the question
KINDS = ("zammad", "zendesk", "freshdesk", "chatwoot", "webhook")


def handoff_config() -> HandoffConfig:
    common = {"webhook_secret_env": "HOOK_SECRET", "url": "https://helpdesk.invalid"}
    return HandoffConfig.model_validate({"targets": [
        {"name": "zammad", "kind": "zammad", "token_env": "HD_TOKEN", **common},
        {"name": "zendesk", "kind": "zendesk", "email": "bot@example.com", "token_env": "HD_TOKEN", **common},
        {"name": "freshdesk", "kind": "freshdesk", "token_env": "HD_TOKEN", **common},
        {"name": "chatwoot", "kind": "chatwoot", "account_id": 1, "inbox_id": 2, "token_env": "HD_TOKEN", **common},
        {"name": "webhook", "kind": "webhook", "secret_env": "HD_TOKEN", **common},
        {"name": "polled", "kind": "zendesk", "email": "bot@example.com", "token_env": "HD_TOKEN",
         "url": "https://helpdesk.invalid", "poll_every_s": 60}]})


class FakeCases:
    """The cases index as HelpdeskCases: documents by id, a write counter, the handoff mapping query."""

    def __init__(self, *cases: Case) -> None:
        self.docs = {c["case_id"]: copy.deepcopy(c) for c in cases}
        self.writes = 0

    def case(self, case_id: str) -> Optional[Case]:
        return copy.deepcopy(self.docs.get(case_id))

    def change(self, case_id: str, decide: Callable[[Case], Optional[Case]]) -> None:
        fields = decide(copy.deepcopy(self.docs[case_id]))
        if fields:
            self.docs[case_id].update(fields)
            self.writes += 1

    def case_of_ticket(self, target: str, ticket_id: str) -> Optional[str]:
        return next((cid for cid, c in self.docs.items()
                     if ((c.get("handoff") or {}).get(target) or {}).get("ticket_id") == ticket_id), None)

    def handed_off(self, target: str, after: Optional[str], size: int) -> list[Case]:
        found = sorted(cid for cid, c in self.docs.items() if c["status"] != "closed"
                       and ((c.get("handoff") or {}).get(target) or {}).get("state") == "created")
        return [copy.deepcopy(self.docs[cid]) for cid in found if after is None or cid > after][:size]


def handed_off_case(target: str) -> Case:
    """The question and the cancellation (P1, due 30 minutes after it) handed to `target` as ticket 501."""
    case = merge_all(None, [QUESTION, CANCEL], case_key(QUESTION))
    return {**case, "handoff": {target: {"state": "created", "ticket_id": TICKET, "ticket_url": None, "posts": [],
                                         "sending": None, "reason": None, "updated_at": _at(1)}}}


# ---- deliveries as each helpdesk documents them -------------------------------------------------------------

def sign(kind: str, body: bytes, secret: str = SECRET, now: float = NOW, delivery: Optional[str] = None) -> dict:
    delivery = delivery or str(uuid.uuid4())
    if kind == "zammad":
        return {"X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
                "X-Zammad-Delivery": delivery, "X-Zammad-Trigger": "triage"}
    if kind == "zendesk":
        stamp = _iso(now)
        digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
        return {"X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
                "X-Zendesk-Webhook-Signature-Timestamp": stamp}
    if kind == "freshdesk":
        return {"X-Triage-Secret": secret}
    prefix = "X-Chatwoot-" if kind == "chatwoot" else "X-Triage-"
    stamp = str(int(now))
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {prefix + "Timestamp": stamp, prefix + "Signature": "sha256=" + signature, prefix + "Delivery": delivery}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def payload(kind: str, what: str, case_id: Optional[str] = None, ticket: str = TICKET, at: str = _at(20),
            agent: str = "4711") -> dict[str, Any]:
    """`what` ("answered", "closed", "reassigned") of the ticket in the helpdesk's own documented shape."""
    if kind == "zammad":
        ticket_doc = {"id": int(ticket), "number": "10081", "state": "closed" if what == "closed" else "open",
                      "owner_id": int(agent) if what == "reassigned" else 1, "updated_at": at, "title": "x"}
        body: dict[str, Any] = {"ticket": ticket_doc}
        if what == "answered":
            body["article"] = {"id": 104, "ticket_id": int(ticket), "sender": "Agent", "internal": False,
                               "type": "twitter status", "created_at": at, "created_by_id": int(agent),
                               "body": "Wir kümmern uns."}
        return body
    if kind == "zendesk":
        events = {"answered": ("comment_added", {"comment": {"id": "9001", "body": "Wir kümmern uns.",
                                                             "is_public": True,
                                                             "author": {"id": agent, "is_staff": True,
                                                                        "name": "Agentin"}}}),
                  "closed": ("status_changed", {"current": "SOLVED", "previous": "OPEN"}),
                  "reassigned": ("agent_assignment_changed", {"current": agent, "previous": "12"})}
        name, event = events[what]
        return {"type": f"zen:event-type:ticket.{name}", "account_id": 22129848, "id": str(uuid.uuid4()),
                "time": at.replace(".000Z", ".000000000Z"), "zendesk_event_version": "2022-11-06",
                "subject": f"zen:ticket:{ticket}",
                "detail": {"id": ticket, "external_id": case_id, "status": "OPEN", "priority": "HIGH"},
                "event": event}
    if kind == "freshdesk":
        event = {"answered": "agent_reply", "closed": "resolved", "reassigned": "assigned"}[what]
        return {"event": event, "ticket_id": ticket, "case_id": case_id or "", "agent": agent}
    if kind == "chatwoot":
        attributes = {"triage_case_id": case_id} if case_id else {}
        if what == "answered":
            return {"event": "message_created", "id": 77, "content": "Wir kümmern uns.", "created_at": at,
                    "message_type": "outgoing", "private": False, "sender": {"id": int(agent), "type": "user"},
                    "conversation": {"id": int(ticket), "custom_attributes": attributes}, "account": {"id": 1}}
        if what == "closed":
            return {"event": "conversation_status_changed", "id": int(ticket), "status": "resolved",
                    "custom_attributes": attributes}
        return {"event": "conversation_updated", "id": int(ticket), "custom_attributes": attributes,
                "changed_attributes": [{"assignee_id": {"previous_value": None, "current_value": int(agent)}}]}
    event = {"answered": "answered", "closed": "closed", "reassigned": "reassigned"}[what]
    return {"event": event, "event_id": "ev-1", "ticket_id": ticket, "case_id": case_id, "at": at, "agent": agent}


@pytest.fixture()
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HD_TOKEN", "api-token")


def receiver(store: FakeCases) -> HelpdeskEvents:
    return HelpdeskEvents(handoff_config(), store, clock=lambda: NOW)


def deliver(events: HelpdeskEvents, kind: str, body: Any, headers: Optional[dict] = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return events.handle(f"/hooks/{kind}", headers if headers is not None else sign(kind, data), data)


# ---- per target: answered, closed, reassigned ----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_an_agents_public_answer_in_the_helpdesk_answers_the_case(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    [case_id] = store.docs
    assert deliver(receiver(store), kind, payload(kind, "answered")) == (200, {"changed": True})
    case = store.docs[case_id]
    assert (case["status"], case["answered_via"], case["answered_at"]) == ("answered", "helpdesk", _at(20))
    assert (case["first_response_seconds"], case["within_sla"]) == (1200.0, True)  # P1 due 30 min after the question
    assert (case["helpdesk_answers"], case["brand_posts"]) == (1, 0)
    assert case["answered_by"] == "4711" or kind == "freshdesk"
    assert "Wir kümmern" not in json.dumps(case)  # the agent's words stay in the helpdesk
    CASE_SCHEMA.validate(case)


@pytest.mark.parametrize("kind", KINDS)
def test_a_close_in_the_helpdesk_closes_the_case(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    [case_id] = store.docs
    assert deliver(receiver(store), kind, payload(kind, "closed")) == (200, {"changed": True})
    assert (store.docs[case_id]["status"], store.docs[case_id]["answered_at"]) == ("closed", None)
    CASE_SCHEMA.validate(store.docs[case_id])


@pytest.mark.parametrize("kind", KINDS)
def test_a_reassignment_in_the_helpdesk_sets_the_assignee(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    [case_id] = store.docs
    assert deliver(receiver(store), kind, payload(kind, "reassigned")) == (200, {"changed": True})
    case = store.docs[case_id]
    assert (case["agent"]["assignee"], case["helpdesk"][kind]["assignee"], case["status"]) == ("4711", "4711", "new")
    CASE_SCHEMA.validate(case)


# ---- refusals change nothing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    before = copy.deepcopy(store.docs)
    body = json.dumps(payload(kind, "answered")).encode()
    forged = sign(kind, body, secret="guessed")
    tampered = sign(kind, body)
    attempts = [(forged, body), ({}, body)]
    if kind != "freshdesk":  # Freshdesk signs nothing: its shared secret cannot tell a changed body (documented)
        attempts.append((tampered, body.replace(b"4711", b"4712")))
    for headers, data in attempts:
        status, answer = receiver(store).handle(f"/hooks/{kind}", headers, data)
        assert status == 401 and SECRET not in json.dumps(answer), (headers.keys(), answer)
    assert store.docs == before and store.writes == 0


@pytest.mark.parametrize("kind", ["zendesk", "chatwoot", "webhook"])
def test_a_signed_timestamp_outside_the_window_is_refused(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    body = json.dumps(payload(kind, "answered")).encode()
    status, answer = receiver(store).handle(f"/hooks/{kind}", sign(kind, body, now=NOW - 301), body)
    assert status == 401 and "window" in answer["error"] and store.writes == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_replayed_delivery_changes_nothing_the_second_time(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    [case_id] = store.docs
    events = receiver(store)
    body = json.dumps(payload(kind, "answered")).encode()
    headers = sign(kind, body)
    assert events.handle(f"/hooks/{kind}", headers, body) == (200, {"changed": True})
    answered = copy.deepcopy(store.docs[case_id])
    assert events.handle(f"/hooks/{kind}", headers, body) == (200, {"changed": False})
    # The same event in a new delivery (a helpdesk's retry with fresh headers, or after a restart) is a no-op too.
    assert receiver(store).handle(f"/hooks/{kind}", sign(kind, body), body) == (200, {"changed": False})
    assert store.docs[case_id] == answered and store.writes == 1


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_deliveries_are_refused_with_400(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    events = receiver(store)
    wrong_shape = {"zammad": {"ticket": "501"}, "zendesk": {"type": "zen:event-type:ticket.status_changed"},
                   "freshdesk": {"event": "agent_reply"}, "chatwoot": {"event": "message_created"},
                   "webhook": {"event": "answered", "ticket_id": TICKET}}[kind]
    for body in (b"{not json", b"[1, 2]", json.dumps(wrong_shape).encode()):
        status, answer = deliver(events, kind, body)
        assert status == 400 and answer["error"], body
    assert store.writes == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_ticket_of_no_case_is_404_and_so_is_an_unknown_target(kind: str, secrets: None) -> None:
    store = FakeCases(handed_off_case(kind))
    status, answer = deliver(receiver(store), kind, payload(kind, "answered", ticket="999"))
    assert status == 404 and "999" in answer["error"]
    assert deliver(receiver(store), "nobody", payload(kind, "answered"), headers={})[0] == 404
    assert store.writes == 0


def test_the_external_reference_finds_the_case_without_the_mapping(secrets: None) -> None:
    unmapped = merge_all(None, [QUESTION, CANCEL], case_key(QUESTION))  # e.g. the mapping was not written yet
    store = FakeCases(unmapped)
    assert deliver(receiver(store), "zendesk", payload("zendesk", "answered", case_id=unmapped["case_id"]))[0] == 200
    assert store.docs[unmapped["case_id"]]["answered_via"] == "helpdesk"


def test_internal_notes_and_customer_messages_are_no_answer(secrets: None) -> None:
    store = FakeCases(handed_off_case("zendesk"))
    internal = payload("zendesk", "answered")
    internal["event"]["comment"]["is_public"] = False
    by_customer = payload("zendesk", "answered")
    by_customer["event"]["comment"]["author"]["is_staff"] = False
    for body in (internal, by_customer):
        assert deliver(receiver(store), "zendesk", body) == (200, {"changed": False})
    store = FakeCases(handed_off_case("zammad"))
    note = payload("zammad", "answered")
    note["article"]["internal"] = True
    assert deliver(receiver(store), "zammad", note) == (200, {"changed": False})  # owner 1: still nobody


def test_the_first_of_helpdesk_and_channel_answers_counts(secrets: None) -> None:
    store = FakeCases(handed_off_case("chatwoot"))
    [case_id] = store.docs
    store.docs[case_id] = merge(store.docs[case_id], ANSWER)  # the channel answered at 25 minutes
    late = payload("chatwoot", "answered", at=_at(40))
    assert deliver(receiver(store), "chatwoot", late) == (200, {"changed": True})
    case = store.docs[case_id]
    assert (case["answered_at"], case["answered_via"], case["brand_posts"], case["helpdesk_answers"]) == (
        _at(25), "channel", 1, 1)


def test_freshdesk_counts_one_answer_per_round_of_the_conversation(secrets: None) -> None:
    """Freshdesk's rule sends the same body for every reply: the round it answers tells them apart."""
    store = FakeCases(handed_off_case("freshdesk"))
    [case_id] = store.docs
    body = payload("freshdesk", "answered")
    assert deliver(receiver(store), "freshdesk", body) == (200, {"changed": True})
    assert deliver(receiver(store), "freshdesk", body) == (200, {"changed": False})  # replayed, same round
    store.docs[case_id] = merge(store.docs[case_id], AGAIN)  # the customer writes again after 2 hours
    three_hours_on = HelpdeskEvents(handoff_config(), store, clock=lambda: NOW + 3 * 3600)
    assert deliver(three_hours_on, "freshdesk", body) == (200, {"changed": True})
    case = store.docs[case_id]
    assert (case["status"], case["reopened"], case["helpdesk_answers"], case["answered_at"]) == (
        "answered", 1, 2, _at(20))


# ---- over HTTP -------------------------------------------------------------------------------------------------

def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json",
                                                                              **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_http_receiver_answers_after_the_write_and_limits_the_body(secrets: None) -> None:
    store = FakeCases(handed_off_case("webhook"))
    body = json.dumps(payload("webhook", "answered")).encode()
    with HelpdeskEventsServer(receiver(store), "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/hooks/webhook"
        assert _post(url, body, sign("webhook", body)) == (200, {"changed": True})
        assert store.writes == 1
        assert _post(url, body, {"X-Triage-Signature": "sha256=" + "0" * 64})[0] == 401
        big = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        big.putrequest("POST", "/hooks/webhook")
        big.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        big.endheaders()  # refused before the body is read
        assert big.getresponse().status == 413
        big.close()
        assert _post(url.replace("/webhook", "/elsewhere"), body, sign("webhook", body))[0] == 404


# ---- polling -------------------------------------------------------------------------------------------------

class StandInHelpdesk(HelpdeskClient):
    """Only what polling calls: the state of each ticket, set by the test; `down` raises HelpdeskUnavailable."""
    kind = "zendesk"

    def __init__(self) -> None:
        self.states: dict[str, TicketState] = {}
        self.asked: list[str] = []
        self.down = False

    def ticket_state(self, ticket: Ticket) -> TicketState:
        if self.down:
            raise HelpdeskUnavailable("HTTP 503")
        self.asked.append(ticket.id)
        return self.states.get(ticket.id, TicketState("open"))

    def find_ticket(self, case_id: str) -> None:
        raise AssertionError("not polled")

    create_ticket = find_followup = add_followup = find_ticket  # type: ignore[assignment]


def test_a_ticket_answered_in_the_helpdesk_marks_the_case_answered_after_one_poll_round() -> None:
    cases = []
    for n in range(5):
        case = handed_off_case("polled")
        cases.append({**case, "case_id": f"case:{n:024x}", "handoff": {"polled": {**case["handoff"]["polled"],
                                                                                  "ticket_id": str(600 + n)}}})
    store = FakeCases(*cases)
    helpdesk = StandInHelpdesk()
    helpdesk.states["601"] = TicketState("answered", answered_at=_at(20), assignee="4711")
    helpdesk.states["603"] = TicketState("closed")
    poller = Poller("polled", helpdesk, store, page_size=3)

    assert poller.poll_once(now=lambda: _at(45)) == 1  # a page of 3: 600, 601, 602
    assert helpdesk.asked == ["600", "601", "602"]
    answered = store.docs[f"case:{1:024x}"]
    assert (answered["status"], answered["answered_via"], answered["first_response_seconds"]) == (
        "answered", "helpdesk", 1200.0)
    assert answered["agent"]["assignee"] == "4711"
    assert poller.poll_once(now=lambda: _at(46)) == 1  # the next page: 603 closed, 604
    assert store.docs[f"case:{3:024x}"]["status"] == "closed"
    writes = store.writes
    assert poller.poll_once(now=lambda: _at(47)) == 0 and store.writes == writes  # again from the start: no news

    helpdesk.down = True
    cursor = poller.cursor
    assert poller.poll_once() == 0 and poller.cursor == cursor  # the round ends; the next one starts there again


def test_polling_the_zendesk_fake_marks_the_case_answered_after_one_round() -> None:
    from connectors.helpdesks import client_for
    from connectors.helpdesks.base import Customer, Message, TicketDraft
    from connectors.http import HttpClient
    from fake_helpdesks import FakeZendesk

    with FakeZendesk() as zendesk:
        target = zendesk.target("polled", poll_every_s=60)
        client = client_for(target, HttpClient("triage-test", timeout_s=5.0, max_retries=1, backoff_s=0.0,
                                               sleep=lambda seconds: None))
        case = handed_off_case("polled")
        ticket = client.create_ticket(TicketDraft(
            case_id=case["case_id"], title="Kündigung", customer=Customer("twitter", "u1", "kunde_u1", None),
            message=Message("twitter:1", _at(0), "Wie geht das?", None, None), group=None, priority="high",
            due_at=None))
        case["handoff"]["polled"]["ticket_id"] = ticket.id
        store = FakeCases(case)
        poller = Poller("polled", client, store)
        assert poller.poll_once(now=lambda: _at(30)) == 0  # nobody answered yet
        zendesk.reply(ticket.id, "Wir kümmern uns.", at=_at(20))
        assert poller.poll_once(now=lambda: _at(31)) == 1
        answered = store.docs[case["case_id"]]
        assert (answered["status"], answered["answered_via"], answered["answered_at"]) == (
            "answered", "helpdesk", _at(20))
        assert poller.poll_once(now=lambda: _at(32)) == 0  # the same answer polled again
        CASE_SCHEMA.validate(answered)


# ---- the whole path on the live cases index ---------------------------------------------------------------

@pytest.mark.integration
def test_a_zendesk_webhook_answers_a_case_in_the_index_and_the_first_answer_counts(
        live: Settings, run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.helpdesk_events import HelpdeskCasesIndex
    from conftest import own_names
    from core.clients import elasticsearch_client
    from triage.case_writer import CasesIndex

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HD_TOKEN", "api-token")
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-hearback"}, kafka=False) as settings:
        cfg = settings.elasticsearch
        es = elasticsearch_client(cfg)
        try:
            writer = CasesIndex(es, cfg, wait=lambda _: None)
            key = case_key(QUESTION)
            assert writer.update({key.case_id: (key, [QUESTION, CANCEL])})[0] == 1
            es.update(index=cfg.cases_write_alias, id=key.case_id, refresh=True,
                      doc={"handoff": handed_off_case("zendesk")["handoff"]})
            events = HelpdeskEvents(handoff_config(), HelpdeskCasesIndex(es, cfg), clock=lambda: NOW)
            with HelpdeskEventsServer(events, "127.0.0.1", 0) as server:
                url = f"http://127.0.0.1:{server.port}/hooks/zendesk"
                # No external id in the event: the case is found by its ticket through the handoff mapping.
                body = json.dumps(payload("zendesk", "answered")).encode()
                assert _post(url, body, sign("zendesk", body)) == (200, {"changed": True})
                assert _post(url, body, sign("zendesk", body)) == (200, {"changed": False})
                other = json.dumps(payload("zendesk", "answered", ticket="999")).encode()
                assert _post(url, other, sign("zendesk", other))[0] == 404

            case = es.get(index=cfg.cases_read_alias, id=key.case_id)["_source"]
            assert (case["status"], case["answered_via"], case["answered_at"]) == ("answered", "helpdesk", _at(20))
            assert case["first_response_seconds"] == 1200.0 and case["within_sla"] is True
            CASE_SCHEMA.validate(case)

            # The channel's answer (25 minutes) is read later: recorded, and the helpdesk's stays the first.
            assert writer.update({key.case_id: (key, [ANSWER])})[0] == 1
            case = es.get(index=cfg.cases_read_alias, id=key.case_id)["_source"]
            assert (case["answered_via"], case["answered_at"], case["brand_posts"], case["helpdesk_answers"]) == (
                "helpdesk", _at(20), 1, 1)
            assert ANSWER["id"] in [p["id"] for p in case["posts"]]
            assert case["handoff"]["zendesk"]["ticket_id"] == TICKET  # the handoff's mapping is kept
            index = HelpdeskCasesIndex(es, cfg)  # what polling would read: a page after a cursor
            assert [c["case_id"] for c in index.handed_off("zendesk", None, 10)] == [key.case_id]
            assert index.handed_off("zendesk", key.case_id, 10) == [] and index.handed_off("zammad", None, 10) == []
        finally:
            es.close()


def test_the_module_documents_what_it_follows() -> None:
    text = (Path(__file__).resolve().parent.parent / "apps" / "helpdesk_events.py").read_text()
    for header in ("X-Hub-Signature", "X-Zendesk-Webhook-Signature-Timestamp", "X-Triage-Secret",
                   "X-Chatwoot-Signature", "X-Triage-Signature"):
        assert header in text
