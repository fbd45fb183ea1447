"""The handoff (apps/handoff.py, apps/handoff_draft.py) without Kafka or Elasticsearch.

Cases live in `FakeStore` (the CaseStore contract of apps/reply.py: `change` applies a partial update like
Elasticsearch's, merging objects); the helpdesk is the Zendesk fake of tests/fake_helpdesks.py behind the real
Zendesk client when it is there, else `MemoryHelpdesk`, an in-memory HelpdeskClient with the same knobs
(scripted unavailability, rejections, and answers lost after the ticket was made). Waiting is a fake sleep that
records what it was asked to wait.
"""
from __future__ import annotations

import copy
import itertools
import json
from typing import Any, Callable, Optional

import pytest

from apps import handoff as handoff_module
from apps.handoff import TargetHandoff, routed
from apps.handoff_draft import draft
from connectors.helpdesks.base import (HelpdeskClient, HelpdeskRejected, HelpdeskUnavailable, Message, Ticket,
                                       TicketDraft)
from connectors.helpdesks.config import Mapping, ZendeskTarget
from core.config import HandoffSettings
from core.records import DeadLetter

CASE_ID = "case:" + "a" * 24
RAW = "Meine IBAN ist DE89370400440532013000, bitte sofort zurückbuchen, Kim Kunde"
REDACTED = "Meine IBAN ist [IBAN], bitte sofort zurückbuchen, Kim Kunde"
MAPPING = Mapping(groups={"billing": "Billing", "default": "Social Media"}, priorities={"P1": "urgent", "P3": "normal"},
                  fields={"intent": "360100"}, tag_prefix="triage")


def target(**settings: Any) -> ZendeskTarget:
    return ZendeskTarget(name="zd", kind="zendesk", url="https://telco.zendesk.example", email="a@telco.example",
                         token_env="ZD_TOKEN", mapping=settings.pop("mapping", MAPPING), **settings)


def case(posts: int = 1, **fields: Any) -> dict[str, Any]:
    entries = [{"id": f"x:{n}", "role": "customer", "at": f"2026-11-23T09:0{n}:00.000Z"} for n in range(1, posts + 1)]
    return {"case_id": CASE_ID, "source": "x", "thread_id": "x:1", "grouping": "thread", "status": "new",
            "queue": "billing", "priority": "P1", "priority_reasons": ["intent cancellation", "sentiment negative"],
            "private_channel": True, "language": "de", "intent": "cancellation", "sentiment": "negative",
            "topic": "Rechnung", "due_at": "2026-11-23T09:30:00.000Z", "posts": entries, "customer_posts": posts,
            "brand_posts": 0, "agent": {"assignee": None, "claimed_at": None}, **fields}


def post_view(n: int) -> dict[str, Any]:
    return {"id": f"x:{n}", "created_at": f"2026-11-23T09:0{n}:00Z", "text_redacted": f"{REDACTED} #{n}",
            "text": f"{RAW} #{n}", "url": f"https://x.com/kim/status/{n}",
            "author": {"id": "42", "handle": "kim_k", "name": "Kim Kunde"}}


class FakeStore:
    """Cases by id; `change` like ElasticsearchCases.change (objects merged as a partial update merges them)."""

    def __init__(self, *cases: dict[str, Any]) -> None:
        self.cases = {c["case_id"]: copy.deepcopy(c) for c in cases}
        self.views = {f"x:{n}": post_view(n) for n in range(1, 10)}
        self.writes = 0

    def case(self, case_id: str) -> Optional[dict[str, Any]]:
        return copy.deepcopy(self.cases.get(case_id))

    def author(self, post_id: str) -> Optional[dict[str, Any]]:
        return self.views[post_id]["author"]

    def posts(self, post_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {pid: copy.deepcopy(self.views[pid]) for pid in post_ids if pid in self.views}

    def change(self, case_id: str, decide: Callable[[dict[str, Any]], Optional[dict[str, Any]]]) -> None:
        fields = decide(copy.deepcopy(self.cases[case_id]))
        if fields:
            self.cases[case_id] = _merge(self.cases[case_id], fields)
            self.writes += 1

    def entry(self, case_id: str = CASE_ID) -> dict[str, Any]:
        return self.cases[case_id]["handoff"]["zd"]


def _merge(doc: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, value in fields.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class MemoryHelpdesk(HelpdeskClient):
    """Tickets by external reference, follow-ups by post id; `script` holds what the next calls do: None (as
    usual), a HelpdeskError (raised instead), or ("lost", error) (carried out, then the error: the answer lost)."""
    kind = "memory"

    def __init__(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        self.script: list[Any] = []
        self.calls: list[str] = []
        self._ids = itertools.count(501)

    def _scripted(self, call: str) -> Optional[Exception]:
        self.calls.append(call)
        if not self.script:
            return None
        step = self.script.pop(0)
        if step is None:
            return None
        if isinstance(step, tuple):
            return step[1]  # carried out below, then raised
        raise step

    def find_ticket(self, case_id: str) -> Optional[Ticket]:
        self._scripted("find_ticket")
        found = self.tickets.get(case_id)
        return Ticket(found["id"], found["url"]) if found else None

    def create_ticket(self, draft: TicketDraft) -> Ticket:
        lost = self._scripted("create_ticket")
        ticket_id = str(next(self._ids))
        first = {draft.message.post_id: ("n0", draft.message, draft.raw_text)} if draft.message.internal_text else {}
        self.tickets[draft.case_id] = {"id": ticket_id, "url": f"https://helpdesk.example/t/{ticket_id}",
                                       "draft": draft, "followups": first}  # the first post's note, as clients do
        if lost:
            raise lost
        return Ticket(ticket_id, self.tickets[draft.case_id]["url"])

    def _ticket(self, ticket: Ticket) -> dict[str, Any]:
        return next(t for t in self.tickets.values() if t["id"] == ticket.id)

    def find_followup(self, ticket: Ticket, post_id: str) -> Optional[str]:
        self._scripted("find_followup")
        return self._ticket(ticket)["followups"].get(post_id, (None,))[0]

    def add_followup(self, ticket: Ticket, message: Message, raw_text: str) -> str:
        lost = self._scripted("add_followup")
        followups = self._ticket(ticket)["followups"]
        followups[message.post_id] = (f"f{len(followups) + 1}", message, raw_text)
        if lost:
            raise lost
        return followups[message.post_id][0]


class Run:
    """One target's handoff over a FakeStore and a MemoryHelpdesk, with a fake sleep and collected dead letters."""

    def __init__(self, *cases: dict[str, Any], **target_settings: Any) -> None:
        self.store, self.helpdesk = FakeStore(*cases), MemoryHelpdesk()
        self.letters: list[DeadLetter] = []
        self.waits: list[float] = []
        self.handoff = TargetHandoff(target(**target_settings), self.helpdesk, self.store, self.letters.append,
                                     HandoffSettings(retry_backoff_s=2, max_backoff_s=60), self.waits.append)

    def __call__(self, case_id: str = CASE_ID) -> handoff_module.Outcome:
        return self.handoff.hand_off_patiently(case_id, json.dumps({"case_id": case_id}).encode())


# ---- the mapping ---------------------------------------------------------------------------------------------

def test_draft_maps_group_priority_due_date_tags_fields_and_keeps_raw_text_internal() -> None:
    made = draft(case(2), {"x:1": post_view(1)}, target())
    assert (made.case_id, made.group, made.priority, made.due_at) == (CASE_ID, "Billing", "urgent",
                                                                     "2026-11-23T09:30:00.000Z")
    assert made.tags == ["triage", "triage:reason:intent_cancellation", "triage:reason:sentiment_negative",
                         "triage:topic:rechnung", "triage:private_channel", "language:de", "sentiment:negative"]
    assert made.fields == {"360100": "cancellation"}  # mapped to a field, so no intent: tag
    assert made.private_channel and made.raw_text == "internal_note"
    assert made.message.internal_text == f"{RAW} #1" and made.message.public_text == f"{REDACTED} #1"
    assert made.message.link == "https://x.com/kim/status/1" and made.message.post_id == "x:1"
    assert "DE89" not in made.title and made.title.startswith("x: Meine IBAN ist [IBAN]")
    assert (made.customer.external_id, made.customer.name) == ("x:42", "Kim Kunde")


def test_draft_default_group_no_priority_mapping_and_body_placement() -> None:
    made = draft(case(queue="general", priority="P2", topic=None, private_channel=False),
                 {"x:1": post_view(1)}, target(raw_text="body", mapping=Mapping(groups={"default": "Social"},
                                                                                label_tags=False)))
    assert (made.group, made.priority, made.raw_text, made.private_channel) == ("Social", None, "body", False)
    assert made.tags == ["triage", "triage:reason:intent_cancellation", "triage:reason:sentiment_negative"]


def test_only_routed_customer_cases_are_handed_off() -> None:
    assert routed(case())
    brand_only = {**case(), "customer_posts": 0, "brand_posts": 1, "queue": None,
                  "posts": [{"id": "x:9", "role": "brand", "at": "2026-11-23T09:00:00.000Z"}]}
    assert not routed(brand_only)
    assert not routed(case(queue=None))
    run = Run(case(queue=None))
    assert run().result == "skipped" and run.helpdesk.calls == [] and "handoff" not in run.store.cases[CASE_ID]


# ---- exactly once ----------------------------------------------------------------------------------------------

def test_a_routed_case_creates_one_ticket_and_records_it_without_raw_text() -> None:
    run = Run(case())
    outcome = run()
    assert (outcome.result, outcome.ticket_id) == ("created", "501")
    assert run.helpdesk.calls == ["create_ticket"]  # nothing recorded before: no lookup needed
    entry = run.store.entry()
    assert (entry["state"], entry["ticket_id"], entry["posts"], entry["sending"]) == ("created", "501", ["x:1"], None)
    assert entry["ticket_url"] == "https://helpdesk.example/t/501"
    made = run.helpdesk.tickets[CASE_ID]["draft"]
    assert (made.group, made.priority, made.message.internal_text) == ("Billing", "urgent", f"{RAW} #1")
    assert "DE89" not in json.dumps(run.store.cases) and "Kim" not in json.dumps(run.store.cases)


def test_the_same_update_twice_changes_nothing() -> None:
    run = Run(case(2))
    run()
    calls, writes, before = list(run.helpdesk.calls), run.store.writes, copy.deepcopy(run.store.cases)
    assert run().result == "unchanged"
    assert run.helpdesk.calls == calls and run.store.writes == writes and run.store.cases == before
    assert len(run.helpdesk.tickets) == 1


def test_a_follow_up_post_adds_one_article_once() -> None:
    run = Run(case(1))
    run()
    run.store.cases[CASE_ID] = {**case(2), "handoff": run.store.cases[CASE_ID]["handoff"]}  # the customer wrote again
    outcome = run()
    assert (outcome.result, outcome.added) == ("followups", 1)
    followups = run.helpdesk.tickets[CASE_ID]["followups"]
    assert list(followups) == ["x:1", "x:2"] and followups["x:2"][1].internal_text == f"{RAW} #2"
    assert followups["x:2"][2] == "internal_note"
    assert run.store.entry()["posts"] == ["x:1", "x:2"]
    assert run().added == 0 and len(followups) == 2


def test_a_case_left_in_creating_by_a_crash_is_found_not_created_again() -> None:
    run = Run(case())
    run.helpdesk.script.append(("lost", HelpdeskUnavailable("HTTP 502 after the write")))  # created, answer lost
    with pytest.raises(HelpdeskUnavailable):
        run.handoff.hand_off(CASE_ID)
    assert run.store.entry()["state"] == "pending" and len(run.helpdesk.tickets) == 1
    run.store.cases[CASE_ID]["handoff"]["zd"]["state"] = "creating"  # as a kill -9 right after the request leaves it
    outcome = run()
    assert (outcome.result, outcome.ticket_id) == ("found", "501")
    assert run.helpdesk.calls == ["create_ticket", "find_ticket", "find_followup"]  # its note is there too
    assert len(run.helpdesk.tickets) == 1 and run.store.entry()["posts"] == ["x:1"]
    assert run.store.entry()["state"] == "created"


def test_a_ticket_found_without_its_internal_note_gets_the_note() -> None:
    run = Run(case())
    run.helpdesk.script.append(("lost", HelpdeskUnavailable("connection reset")))
    with pytest.raises(HelpdeskUnavailable):
        run.handoff.hand_off(CASE_ID)
    del run.helpdesk.tickets[CASE_ID]["followups"]["x:1"]  # the ticket was made, the note with the raw text was not
    outcome = run()
    assert (outcome.result, outcome.added) == ("found", 1) and len(run.helpdesk.tickets) == 1
    assert run.helpdesk.tickets[CASE_ID]["followups"]["x:1"][1].internal_text == f"{RAW} #1"


def test_a_follow_up_left_in_sending_is_looked_up_not_added_again() -> None:
    run = Run(case(2))
    run.helpdesk.script += [None, ("lost", HelpdeskUnavailable("timeout"))]  # the ticket; the follow-up's answer lost
    with pytest.raises(HelpdeskUnavailable):
        run.handoff.hand_off(CASE_ID)
    assert run.store.entry()["sending"] == "x:2"
    run()
    assert list(run.helpdesk.tickets[CASE_ID]["followups"]) == ["x:1", "x:2"]
    assert run.helpdesk.calls[-1] == "find_followup" and run.store.entry()["posts"] == ["x:1", "x:2"]


def test_after_an_uncertain_create_a_lagging_search_is_given_time_before_creating_again() -> None:
    from datetime import datetime, timedelta
    run = Run(case())
    run.helpdesk.kind = "zammad"  # its search index lags its writes (handoff.SEARCH_LAG_S)
    run.helpdesk.script.append(HelpdeskUnavailable("HTTP 504"))  # not created, but we cannot know that

    def wait(seconds: float) -> None:  # time passes: the entry's attempt gets older
        run.waits.append(seconds)
        entry = run.store.entry()
        at = datetime.fromisoformat(entry["updated_at"].replace("Z", "+00:00")) - timedelta(seconds=seconds + 0.01)
        entry["updated_at"] = at.isoformat()
    run.handoff.wait = wait  # type: ignore[method-assign]
    assert run().result == "created"
    assert run.helpdesk.calls == ["create_ticket", "find_ticket", "find_ticket", "create_ticket"]
    assert 8 < sum(run.waits) < 12 and len(run.helpdesk.tickets) == 1


# ---- failures --------------------------------------------------------------------------------------------------

def test_429_with_retry_after_is_waited_as_asked() -> None:
    run = Run(case())
    run.helpdesk.script.append(HelpdeskUnavailable("HTTP 429", retry_after_s=7))
    assert run().result == "created"
    assert run.waits == [7] and len(run.helpdesk.tickets) == 1


def test_503_leaves_the_case_pending_with_the_reason_then_it_drains() -> None:
    run = Run(case())
    seen: list[dict[str, Any]] = []
    run.handoff.wait = lambda s: (seen.append(dict(run.store.entry())), run.waits.append(s))  # type: ignore
    run.helpdesk.script += [HelpdeskUnavailable("HTTP 503 Service Unavailable")] * 3
    assert run().result == "created"
    assert [e["state"] for e in seen] == ["pending"] * 3 and "HTTP 503" in seen[0]["reason"]
    assert len(run.waits) == 3 and 1.5 <= run.waits[0] <= 2.5 and run.waits[1] > run.waits[0]
    assert run.store.entry()["state"] == "created" and run.store.entry()["reason"] is None
    assert len(run.helpdesk.tickets) == 1


def test_a_long_retry_after_is_capped_at_max_backoff() -> None:
    run = Run(case())
    run.helpdesk.script.append(HelpdeskUnavailable("HTTP 429", retry_after_s=3600))
    run()
    assert run.waits == [60]


def test_422_fails_the_case_with_a_dead_letter_naming_the_reason_and_case() -> None:
    run = Run(case())
    run.helpdesk.script.append(HelpdeskRejected(422, "Priority: urgentest is not a valid priority"))
    assert run().result == "failed"
    entry = run.store.entry()
    assert entry["state"] == "failed" and "urgentest is not a valid priority" in entry["reason"]
    [letter] = run.letters
    assert letter.reason_code == "handoff_rejected" and CASE_ID in letter.reason and "HTTP 422" in letter.reason
    assert json.loads(letter.payload) == {"case_id": CASE_ID} and RAW not in letter.reason
    assert run().result == "failed" and len(run.letters) == 1 and run.helpdesk.calls == ["create_ticket"]


# ---- through the real Zendesk client, against the Zendesk fake (its documented requests and answers) -----------

@pytest.fixture()
def zendesk() -> Any:
    from fake_helpdesks import FakeZendesk
    with FakeZendesk() as fake:
        yield fake


def _zendesk_run(fake: Any, store: FakeStore, waits: list[float], letters: list[DeadLetter]) -> TargetHandoff:
    from connectors.helpdesks.zendesk import ZendeskClient
    from connectors.http import HttpClient
    zd = fake.target("zd", groups={"billing": "Billing", "default": "Social Media"},
                     priorities={"P1": "urgent", "P3": "normal"}, tag_prefix="triage")
    client = ZendeskClient(zd, HttpClient("test", max_retries=0, sleep=waits.append))
    return TargetHandoff(zd, client, store, letters.append, HandoffSettings(retry_backoff_s=2, max_backoff_s=60),
                         waits.append)


def test_zendesk_gets_one_ticket_with_group_priority_due_date_tags_and_internal_note(zendesk: Any) -> None:
    store, waits, letters = FakeStore(case(1)), [], []
    run = _zendesk_run(zendesk, store, waits, letters)
    assert run.hand_off_patiently(CASE_ID).result == "created"
    [ticket] = zendesk.tickets()
    assert (ticket["external_id"], ticket["group_id"], ticket["priority"]) == (CASE_ID, 360002, "urgent")
    assert (ticket["type"], ticket["due_at"]) == ("task", "2026-11-23T09:30:00.000Z")
    assert {"triage", "triage:reason:intent_cancellation", "language:de"} <= set(ticket["tags"])
    first, note = zendesk.articles(ticket["id"])
    assert first["public"] and RAW not in first["body"] and REDACTED in first["body"]
    assert not note["public"] and f"{RAW} #1" in note["body"]
    assert store.entry()["ticket_id"] == str(ticket["id"]) and RAW not in json.dumps(store.cases)

    store.cases[CASE_ID] = {**case(2), "handoff": store.cases[CASE_ID]["handoff"]}  # a follow-up post
    assert run.hand_off_patiently(CASE_ID).added == 1
    assert run.hand_off_patiently(CASE_ID).result == "unchanged"  # redelivered: nothing more
    articles = zendesk.articles(ticket["id"])
    assert len(articles) == 3 and f"{RAW} #2" in articles[2]["body"] and not articles[2]["public"]
    assert len(zendesk.tickets()) == 1 and letters == []


def test_zendesk_429_retry_after_then_created_and_422_dead_letter(zendesk: Any) -> None:
    store, waits, letters = FakeStore(case(1), {**case(1), "case_id": "case:" + "b" * 24}), [], []
    run = _zendesk_run(zendesk, store, waits, letters)
    zendesk.fail_next(429, {"Retry-After": "7"})
    assert run.hand_off_patiently(CASE_ID).result == "created" and 7 in waits
    zendesk.fail_next(422)
    assert run.hand_off_patiently("case:" + "b" * 24).result == "failed"
    [letter] = letters
    assert "case:" + "b" * 24 in letter.reason and "HTTP 422" in letter.reason
    assert "scripted failure" in store.entry("case:" + "b" * 24)["reason"]
    assert len(zendesk.tickets()) == 1


# ---- the case writer announces the cases it settled, only with the handoff on ----------------------------------

class _Announced:
    """Stands in for core.kafka_writer.KafkaWriter in the case writer: records what it was asked to publish."""
    records: list[tuple[str, bytes, bytes]] = []

    def __init__(self, cfg: Any) -> None:
        pass

    def write_records(self, topic: str, records: Any) -> int:
        batch = [(topic, key, value) for key, value in records]
        _Announced.records += batch
        return len(batch)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("handoff_on", [True, False])
def test_the_case_writer_announces_each_case_of_a_flush_keyed_by_case_id(settings: Any, handoff_on: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from test_cases import ANSWER, CANCEL, QUESTION, FakeCases
    from triage import case_writer
    from triage.cases import case_key
    fake = FakeCases()
    monkeypatch.setattr(case_writer, "elasticsearch_client", lambda cfg: fake)
    monkeypatch.setattr(case_writer, "KafkaWriter", _Announced)
    _Announced.records = []
    on = settings.model_copy(update={"handoff": HandoffSettings(targets_file="handoff.yaml" if handoff_on else None)})
    for _ in range(2):  # the second run changes no case, and announces them again (a crash may have come between)
        with TestPipeline() as p:
            _ = p | beam.Create([QUESTION, CANCEL, ANSWER]) | case_writer.MaintainCases(on)
    cid = case_key(QUESTION).case_id
    if not handoff_on:
        assert _Announced.records == []
        return
    assert [(t, k.decode()) for t, k, _ in _Announced.records] == [(settings.kafka.topics.case_updates, cid)] * 2
    updates = [json.loads(v) for _, _, v in _Announced.records]
    assert updates[0] == updates[1] == {"case_id": cid, "updated_at": fake.docs[cid][0]["updated_at"]}
