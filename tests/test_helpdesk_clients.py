"""The helpdesk clients (connectors/helpdesks/) against the local fakes of each API (tests/fake_helpdesks.py).

Per target, what an agent and the data-protection officer would check in the helpdesk: one ticket with the mapped
group, priority, due date, tags and fields; the raw text (personal data) only on the internal side, never in a
public part; the ticket found again by its case id; a follow-up added once and found again; and the failures the
handoff tells apart: rate limit (with the wait asked for), down, a refused payload with the API's reason, a wrong
token named by its variable, never by its value.
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from dataclasses import dataclass, replace
from typing import Any, Callable

import pytest

from connectors.helpdesks import client_for
from connectors.helpdesks.base import Customer, HelpdeskRejected, HelpdeskUnavailable, Message, TicketDraft
from connectors.http import HttpClient
from fake_helpdesks import FakeChatwoot, FakeFreshdesk, FakeWebhookReceiver, FakeZammad, FakeZendesk

RAW = "Vertrag 4711-0815, ruf mich an: +49 170 1234567"
MESSAGE = Message(post_id="x:1850000000000000001", created_at="2026-11-05T08:55:00Z",
                  public_text="Mein Router ist seit Montag offline, Vertrag [NUMBER]",
                  internal_text=f"Mein Router ist seit Montag offline. {RAW}",
                  link="https://x.com/kunde/status/1850000000000000001")
FOLLOWUP = Message(post_id="x:1850000000000000002", created_at="2026-11-05T09:10:00Z",
                   public_text="Immer noch offline, Adresse [ADDRESS]", internal_text="Immer noch offline, Hauptstr. 5",
                   link="https://x.com/kunde/status/1850000000000000002")
CASE = "case:0123456789abcdef01234567"
DUE = "2026-11-05T13:00:00Z"


@dataclass
class Api:
    """One API under test: its fake, the draft's mapped values for it, and how to read what the fake holds."""
    fake: Callable[[], Any]
    group: str
    priority: str
    fields: dict[str, str]
    check: Callable[[dict[str, Any]], None]  # the ticket as the fake holds it: mapped values in place
    public: Callable[[Any, dict[str, Any]], list[str]]  # texts the customer side can see
    internal: Callable[[Any, dict[str, Any]], list[str]]  # internal notes
    bad_priority: str  # a value the API refuses (422/400 with its reason)
    reason: str  # words of that reason


def _zendesk_check(ticket: dict[str, Any]) -> None:
    assert (ticket["group_id"], ticket["priority"], ticket["type"], ticket["due_at"]) == (360001, "urgent", "task", DUE)
    assert ticket["external_id"] == CASE
    assert {"triage-outage", "language_de", "triage-private-channel"} <= set(ticket["tags"])
    assert ticket["custom_fields"] == [{"id": 360005, "value": "negative"}]


def _zammad_check(ticket: dict[str, Any]) -> None:
    assert (ticket["group"], ticket["priority"], ticket["triage_sentiment"]) == ("Social Media", "3 high", "negative")
    assert {"triage-case-0123456789abcdef01234567", "triage-outage", "triage-private-channel"} <= set(ticket["tags"])


def _freshdesk_check(ticket: dict[str, Any]) -> None:
    assert (ticket["group_id"], ticket["priority"], ticket["due_by"], ticket["fr_due_by"]) == (43000001, 4, DUE, DUE)
    assert ticket["custom_fields"] == {"cf_sentiment": "negative", "cf_triage_case_id": CASE}
    assert {"triage-outage", "triage-private-channel"} <= set(ticket["tags"])


def _chatwoot_check(conversation: dict[str, Any]) -> None:
    assert conversation["meta"]["team"]["name"] == "social media" and conversation["priority"] == "urgent"
    assert conversation["custom_attributes"] == {"sentiment": "negative", "triage_case_id": CASE}
    assert {"triage-outage", "triage-private-channel"} <= set(conversation["labels"])


APIS = {
    "zendesk": Api(FakeZendesk, "Social Media", "urgent", {"360005": "negative"}, _zendesk_check,
                   lambda f, t: [t["subject"]] + [c["body"] for c in f.articles(t["id"]) if c["public"]],
                   lambda f, t: [c["body"] for c in f.articles(t["id"]) if not c["public"]],
                   "highest", "Priority: highest is not a valid priority"),
    "zammad": Api(FakeZammad, "Social Media", "3 high", {"triage_sentiment": "negative"}, _zammad_check,
                  lambda f, t: [t["title"]] + [a["body"] for a in f.articles(t["id"]) if not a["internal"]],
                  lambda f, t: [a["body"] for a in f.articles(t["id"]) if a["internal"]],
                  "9 extreme", "No lookup value found for 'priority'"),
    "freshdesk": Api(FakeFreshdesk, "Social Media", "4", {"cf_sentiment": "negative"}, _freshdesk_check,
                     lambda f, t: [t["subject"], t["description"]] + [c["body"] for c in f.articles(t["id"])
                                                                      if not c["private"]],
                     lambda f, t: [c["body"] for c in f.articles(t["id"]) if c["private"]],
                     "9", "priority: It should be one of these values"),
    "chatwoot": Api(FakeChatwoot, "social media", "urgent", {"sentiment": "negative"}, _chatwoot_check,
                    lambda f, t: [m["content"] for m in f.articles(t["id"]) if not m["private"]],
                    lambda f, t: [m["content"] for m in f.articles(t["id"]) if m["private"]],
                    "extreme", "'extreme' is not one of urgent, high, medium, low"),
}


def instant(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def draft(api: Api, **changes: Any) -> TicketDraft:
    base = TicketDraft(case_id=CASE, title="Router offline seit Montag (outage)", message=MESSAGE,
                       customer=Customer(source="x", id="5005", handle="kunde", name="Kunde Eins"),
                       group=api.group, priority=api.priority, due_at=DUE,
                       tags=["triage-outage", "language_de"], fields=api.fields, private_channel=True)
    return replace(base, **changes)


@pytest.fixture
def http() -> HttpClient:
    return HttpClient("triage-test", timeout_s=5.0, max_retries=1, backoff_s=0.0, sleep=lambda seconds: None)


@pytest.fixture(params=sorted(APIS))
def api(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    spec = APIS[request.param]
    with spec.fake() as fake:
        yield spec, fake


def test_a_case_becomes_one_ticket_with_the_mapping_and_the_raw_text_only_internal(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    ticket = client.create_ticket(draft(spec))

    [held] = fake.tickets()
    assert str(held["id"]) == ticket.id and ticket.url
    spec.check(held)
    public, internal = " ".join(spec.public(fake, held)), " ".join(spec.internal(fake, held))
    assert MESSAGE.public_text in public and MESSAGE.link in public
    assert RAW in internal and "Private channel" in internal
    assert RAW not in public and "4711" not in public


def test_raw_text_in_the_body_stays_off_every_public_part(api, http) -> None:
    spec, fake = api
    client_for(fake.target("desk", raw_text="body"), http).create_ticket(draft(spec, raw_text="body"))

    [held] = fake.tickets()
    everything = " ".join(spec.public(fake, held) + spec.internal(fake, held))
    assert RAW in everything
    if spec.fake is not FakeFreshdesk:  # Freshdesk's description is the body the setting chooses
        assert RAW not in " ".join(spec.public(fake, held))


def test_the_ticket_is_found_again_by_its_case_id(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    assert client.find_ticket(CASE) is None
    ticket = client.create_ticket(draft(spec))
    client.create_ticket(draft(spec, case_id="case:ffffffffffffffffffffffff"))

    assert client.find_ticket(CASE) == ticket
    assert client.find_ticket("case:000000000000000000000000") is None


def test_a_followup_is_one_internal_article_found_again_by_its_post(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    ticket = client.create_ticket(draft(spec))
    assert client.find_followup(ticket, FOLLOWUP.post_id) is None

    article = client.add_followup(ticket, FOLLOWUP, "internal_note")

    assert article and client.find_followup(ticket, FOLLOWUP.post_id) == article
    [held] = fake.tickets()
    internal = spec.internal(fake, held)
    assert sum("Hauptstr. 5" in text for text in internal) == 1
    assert "Hauptstr. 5" not in " ".join(spec.public(fake, held))
    assert client.find_followup(ticket, "x:1850000000000000099") is None


def test_rate_limit_is_unavailable_with_the_wait_asked_for(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    ticket = client.create_ticket(draft(spec))
    before = len(spec.internal(fake, fake.tickets()[0]))
    fake.fail_next(429, {"Retry-After": "7"})

    with pytest.raises(HelpdeskUnavailable) as caught:
        client.add_followup(ticket, FOLLOWUP, "internal_note")

    assert caught.value.retry_after_s == 7.0
    assert len(spec.internal(fake, fake.tickets()[0])) == before


def test_a_lookup_without_client_retries_keeps_the_wait_a_429_asked_for(api) -> None:
    """The handoff waits failures out itself (HttpClient with max_retries=0): a lookup's 429 tells it how long."""
    spec, fake = api
    client = client_for(fake.target("desk"), HttpClient("triage-test", timeout_s=5.0, max_retries=0))
    fake.fail_next(429, {"Retry-After": "9"})
    with pytest.raises(HelpdeskUnavailable) as caught:
        client.find_ticket(CASE)
    assert caught.value.retry_after_s == 9.0


@pytest.mark.parametrize("hang_up", [False, True], ids=["503", "no-answer"])
def test_a_helpdesk_that_is_down_is_unavailable_and_back_up_works(api, http, hang_up: bool) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    fake.down(hang_up=hang_up)
    with pytest.raises(HelpdeskUnavailable):
        client.create_ticket(draft(spec))
    with pytest.raises(HelpdeskUnavailable):
        client.find_ticket(CASE)
    assert fake.tickets() == []

    fake.up()
    assert client.create_ticket(draft(spec)) == client.find_ticket(CASE)


def test_a_refused_payload_is_rejected_with_the_apis_reason(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    with pytest.raises(HelpdeskRejected) as caught:
        client.create_ticket(draft(spec, priority=spec.bad_priority))

    assert caught.value.status in (400, 422) and spec.reason in caught.value.reason
    assert fake.tickets() == []


def test_an_api_error_body_gives_the_reason(api, http) -> None:
    """A 422 in the API's documented error shape: the reason is the API's words, not a status line."""
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    ticket = client.create_ticket(draft(spec))
    fake.fail_next(422)
    with pytest.raises(HelpdeskRejected) as caught:
        client.add_followup(ticket, FOLLOWUP, "internal_note")
    assert caught.value.status == 422 and "scripted failure" in caught.value.reason


def test_a_wrong_token_is_rejected_naming_its_variable_not_its_value(api, http, monkeypatch) -> None:
    spec, fake = api
    target = fake.target("desk")
    monkeypatch.setenv(target.token_env, "wrong-secret-value")
    with pytest.raises(HelpdeskRejected) as caught:
        client_for(target, http).create_ticket(draft(spec))

    assert caught.value.status == 401
    assert target.token_env in str(caught.value) and "wrong-secret-value" not in str(caught.value)


def test_an_uncertain_create_is_found_by_the_lookup_the_handoff_makes(api, http) -> None:
    """The ticket is written but the answer lost (a gateway error): unavailable, and find_ticket finds it."""
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    fake.lose_create_answer(502)
    with pytest.raises(HelpdeskUnavailable):
        client.create_ticket(draft(spec))
    assert len(fake.tickets()) == 1 and client.find_ticket(CASE).id == str(fake.tickets()[0]["id"])


# ---- the generic webhook -----------------------------------------------------------------------------------------

@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    with FakeWebhookReceiver() as fake:
        yield fake


def test_a_webhook_delivery_is_signed_stable_and_deduped_by_the_receiver(receiver, http) -> None:
    client = client_for(receiver.target("hook"), http)
    first = client.create_ticket(draft(APIS["zendesk"]))
    again = client.create_ticket(draft(APIS["zendesk"]))  # a retry after a crash: the same delivery id

    assert first == again and first.id == "WH-1"
    [delivery] = receiver.deliveries()
    assert delivery["event"] == "ticket.create" and delivery["case_id"] == CASE
    assert delivery["message"]["text"] == MESSAGE.public_text and delivery["message"]["internal_text"] == \
        MESSAGE.internal_text
    assert delivery["ticket"]["priority"] == "urgent" and delivery["ticket"]["due_at"] == DUE
    sent = [r for r in receiver.requests if r.method == "POST"]
    assert sent[0].headers["X-Triage-Delivery"] == sent[1].headers["X-Triage-Delivery"]
    stamp = sent[0].headers["X-Triage-Timestamp"]
    expected = hmac.new(receiver.secret.encode(), stamp.encode() + b"." + sent[0].body, hashlib.sha256).hexdigest()
    assert sent[0].headers["X-Triage-Signature"] == f"sha256={expected}"

    followup = client.add_followup(first, FOLLOWUP, "internal_note")
    later = receiver.deliveries()[1]
    assert (later["event"], later["ticket_id"], later["delivery_id"]) == ("ticket.followup", "WH-1", followup)
    assert later["message"]["internal_text"] == FOLLOWUP.internal_text
    assert client.find_ticket(CASE) is None  # a webhook cannot be asked


def test_a_webhook_with_the_wrong_secret_is_rejected_naming_the_variable(receiver, http, monkeypatch) -> None:
    target = receiver.target("hook")
    monkeypatch.setenv(target.secret_env, "not-the-secret")
    with pytest.raises(HelpdeskRejected) as caught:
        client_for(target, http).create_ticket(draft(APIS["zendesk"]))
    assert caught.value.status == 401 and target.secret_env in str(caught.value)
    assert "not-the-secret" not in str(caught.value) and receiver.deliveries() == []


def test_a_webhook_receiver_down_or_limiting_is_unavailable(receiver, http) -> None:
    client = client_for(receiver.target("hook"), http)
    receiver.fail_next(429, {"Retry-After": "12"})
    with pytest.raises(HelpdeskUnavailable) as caught:
        client.create_ticket(draft(APIS["zendesk"]))
    assert caught.value.retry_after_s == 12.0
    receiver.down()
    with pytest.raises(HelpdeskUnavailable):
        client.create_ticket(draft(APIS["zendesk"]))
    receiver.up()
    assert client.create_ticket(draft(APIS["zendesk"])).id == "WH-1"
    assert len(receiver.deliveries()) == 1


def test_polling_reads_status_and_first_agent_reply(api, http) -> None:
    spec, fake = api
    client = client_for(fake.target("desk"), http)
    ticket = client.create_ticket(draft(spec))
    assert client.ticket_state(ticket).status == "open" and client.ticket_state(ticket).answered_at is None

    fake.reply(ticket.id, "Wir schauen uns das an.", at="2026-11-05T09:30:00Z")
    state = client.ticket_state(ticket)
    assert state.status == "answered" and instant(state.answered_at) == instant("2026-11-05T09:30:00Z")

    fake.set_status(ticket.id, {"zendesk": "solved", "zammad": "closed", "freshdesk": 5, "chatwoot": "resolved"}[
        client.kind])
    assert client.ticket_state(ticket).status == "closed"
