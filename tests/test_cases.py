"""Conversations (cases): the case of a post, merging posts into a case, the case writer, and one batch run.

The logic tests route their posts with the shipped rules (triage/rules/telecom-de.yaml), so due times are the
ones the SLA rules give. The two integration tests run against Elasticsearch: one conversation through
`triage batch` and `triage reprocess`; and a reply sent with `triage reply` to a fake Mastodon server
(tests/fake_apis.py::FakeChannels), read back by the connector and batched, which answers its case `via product`.
"""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from jsonschema import Draft202012Validator, FormatChecker

import schemas
from core.config import ConfigError, Settings, load_settings
from core.timestamps import utc_iso
from triage import case_writer
from triage.case_writer import CasesIndex
from triage.cases import (assign_from_helpdesk, case_key, close_from_helpdesk, merge, merge_all,
                          record_helpdesk_answer)
from triage.routing import load_rules, route

RULES = load_rules("builtin:telecom-de")
MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)  # 10:00 in Berlin: business hours
THREAD = "twitter:1000"
CASE_SCHEMA = Draft202012Validator(schemas.load_json("case.v1.schema.json"), format_checker=FormatChecker())


def _at(minutes: float) -> str:
    return utc_iso(MONDAY_10 + timedelta(minutes=minutes))


def _label(label: str) -> dict[str, Any]:
    return {"label": label, "score": 0.9, "scores": {label: 0.9}}


def post(n: int, minutes: float, text: str = "Wie geht das?", intent: str = "question", brand: bool = False,
         thread: Optional[str] = THREAD, author: str = "u1", source: str = "twitter") -> dict[str, Any]:
    """An enriched post as the pipeline writes it, routed by the shipped rules."""
    enriched = {"id": f"{source}:{n}", "source": source, "text": text, "created_at": _at(minutes),
                "thread_id": thread, "reply_to_id": None,
                "author": {"id": "b1" if brand else author, "handle": "TelcoHilfe" if brand else f"kunde_{author}",
                           "name": "Team" if brand else "Kim Kunde", "is_brand": True if brand else None},
                "language": {"code": "de", "score": 0.99}, "pii": {"found": False, "types": [], "spans": []},
                "text_redacted": text, "sentiment": _label("neutral"), "intent": _label(intent),
                "topic": {"label": None, "score": 0.1}, "model_versions": {"routing": "test"},
                "processed_at": _at(minutes + 1)}
    return {**enriched, "triage": route(RULES, enriched)}


QUESTION = post(1, 0)  # P3, due in 8 business hours
CANCEL = post(2, 10, "Ich kündige, wenn das so weitergeht!", "cancellation")  # retention P1, due in 30 minutes
ANSWER = post(3, 25, "Das tut uns leid, schreib uns bitte eine DM.", "other", brand=True)
AGAIN = post(4, 120, "Immer noch nichts passiert?")


def test_a_customer_writing_twice_in_one_thread_is_one_case_with_the_more_urgent_priority_and_the_first_due() -> None:
    assert QUESTION["triage"]["priority"] != CANCEL["triage"]["priority"] == "P1"
    assert CANCEL["triage"]["due_at"] < QUESTION["triage"]["due_at"]  # the urgent one is due earlier...
    case = merge(merge(None, QUESTION), CANCEL)
    assert case_key(QUESTION) == case_key(CANCEL) and case["case_id"] == case_key(QUESTION).case_id
    assert case["case_id"].startswith("case:") and len(case["case_id"]) == 29
    assert [p["id"] for p in case["posts"]] == ["twitter:1", "twitter:2"]
    assert (case["customer_posts"], case["brand_posts"], case["status"]) == (2, 0, "new")
    assert (case["queue"], case["priority"]) == ("retention", "P1")
    assert case["priority_reasons"] == CANCEL["triage"]["reasons"] and case["intent"] == "cancellation"
    assert case["private_channel"] is True and case["suggested_reply"].startswith("Danke")  # cancelling: private
    assert case["due_at"] == QUESTION["triage"]["due_at"]  # ...but the case is due from the first unanswered post
    assert case["opened_at"] == case["first_post_at"] == _at(0)
    assert (case["last_customer_post_id"], case["last_customer_post_at"]) == ("twitter:2", _at(10))
    assert case["answered_at"] is None and case["within_sla"] is None and case["reopened"] == 0
    CASE_SCHEMA.validate(case)


def test_a_brand_reply_answers_the_case_and_the_customer_writing_again_reopens_it() -> None:
    answered = merge_all(None, [QUESTION, CANCEL, ANSWER], case_key(QUESTION))
    assert (answered["status"], answered["answered_at"], answered["first_response_seconds"]) == ("answered", _at(25),
                                                                                               1500.0)
    assert (answered["answered_by"], answered["answered_via"], answered["within_sla"]) == ("TelcoHilfe", "channel",
                                                                                           True)
    assert (answered["customer_posts"], answered["brand_posts"]) == (2, 1)
    assert [p["role"] for p in answered["posts"]] == ["customer", "customer", "brand"]
    assert "Kim" not in json.dumps(answered) and "kunde_" not in json.dumps(answered)  # no author names, no text
    assert ANSWER["text"] not in json.dumps(answered)

    reopened = merge(answered, AGAIN)
    assert (reopened["status"], reopened["reopened"]) == ("new", 1)
    assert reopened["opened_at"] == _at(120) and reopened["due_at"] == AGAIN["triage"]["due_at"] != answered["due_at"]
    assert (reopened["queue"], reopened["priority"]) == (AGAIN["triage"]["queue"], AGAIN["triage"]["priority"])
    # The first response stays what it was; the figures count the open round anew.
    assert (reopened["answered_at"], reopened["first_response_seconds"]) == (_at(25), 1500.0)
    CASE_SCHEMA.validate(reopened)


def test_an_answer_late_past_the_deadline_is_not_within_sla_and_a_product_reply_says_so() -> None:
    late = post(5, 60 * 3, "Hallo, wir kümmern uns.", "other", brand=True)  # P1 due after 30 minutes
    case = merge_all(None, [CANCEL, late], case_key(CANCEL))
    assert (case["within_sla"], case["first_response_seconds"]) == (False, 170 * 60.0)
    by_product = merge({**merge(None, CANCEL), "product_reply_ids": [late["id"]]}, late)
    assert by_product["answered_via"] == "product"


def test_the_same_post_twice_changes_nothing() -> None:
    case = merge_all(None, [QUESTION, CANCEL, ANSWER], case_key(QUESTION))
    for again in (QUESTION, CANCEL, ANSWER, {**CANCEL, "triage": {**CANCEL["triage"], "priority": "P4"}}):
        assert merge(case, again) is case  # redelivery, replay, reprocessing with other rules: counted once
    assert merge_all(case, [QUESTION, ANSWER, QUESTION], case_key(QUESTION)) is case


def test_posts_in_any_order_give_the_same_case() -> None:
    """A replay may bring the brand's answer before the customer post it answers."""
    in_order = merge_all(None, [QUESTION, CANCEL, ANSWER, AGAIN], case_key(QUESTION))
    for order in itertools.permutations([QUESTION, CANCEL, ANSWER, AGAIN]):
        assert merge_all(None, list(order), case_key(QUESTION)) == in_order, [p["id"] for p in order]

    answer_first = merge(None, ANSWER, case_key(QUESTION))
    assert (answer_first["customer_posts"], answer_first["status"], answer_first["answered_at"]) == (0, "closed", None)
    completed = merge(answer_first, QUESTION)
    assert (completed["status"], completed["first_response_seconds"], completed["reopened"]) == ("answered", 1500.0, 0)


def test_a_late_post_never_moves_a_case_back() -> None:
    """An older customer post that arrives after the answer joins the answered round: the case stays answered."""
    answered = merge_all(None, [QUESTION, ANSWER], case_key(QUESTION))
    late = merge(answered, CANCEL)
    assert (late["status"], late["reopened"], late["customer_posts"]) == ("answered", 0, 2)
    assert late["priority"] == "P1" and late["first_response_seconds"] == answered["first_response_seconds"]


def test_a_brand_post_alone_opens_no_customer_case() -> None:
    case = merge(None, ANSWER)
    assert (case["customer_posts"], case["brand_posts"], case["status"]) == (0, 1, "closed")
    assert case["queue"] is None and case["priority"] is None and case["due_at"] is None and case["opened_at"] is None
    assert case["answered_at"] is None and case["reopened"] == 0
    CASE_SCHEMA.validate(case)


def test_without_a_thread_the_same_author_within_the_window_is_one_case() -> None:
    first, second = post(10, 0, thread=None), post(11, 5 * 60, thread=None)
    other_author, next_day = post(12, 60, thread=None, author="u2"), post(13, 24 * 60, thread=None)
    key = case_key(first, 24)
    assert key.grouping == "author" and key.thread_id == "author:u1@2026-11-23T00:00:00.000Z"
    assert case_key(second, 24) == key
    assert case_key(other_author, 24) != key and case_key(next_day, 24) != key
    assert case_key(post(14, 0, thread=None, source="facebook"), 24) != key  # another channel
    assert case_key(first, 0) == case_key(first) and case_key(first).thread_id == "twitter:10"  # off: its own case
    brand = post(15, 0, thread=None, brand=True)
    assert case_key(brand, 24).thread_id == "twitter:15"  # the brand's unrelated posts are never grouped
    case = merge_all(None, [first, second], key)
    assert (case["grouping"], case["customer_posts"]) == ("author", 2)
    CASE_SCHEMA.validate(case)


def test_a_thread_is_one_case_whatever_post_starts_it() -> None:
    reply = {**post(21, 5), "thread_id": None, "reply_to_id": "twitter:20"}
    assert case_key(reply) == case_key(post(22, 6, thread="twitter:20"))


def test_statuses_set_by_agents_hold_until_the_customer_writes_again() -> None:
    answered = merge_all(None, [QUESTION, ANSWER], case_key(QUESTION))
    closed = {**answered, "status": "closed"}
    assert merge(closed, CANCEL)["status"] == "closed"  # an older post: no news from the customer
    assert merge(closed, post(6, 90, "Danke!", "other", brand=True))["status"] == "closed"
    assert merge(closed, AGAIN)["status"] == "new"
    opened = merge(None, QUESTION)
    claimed = merge({**opened, "agent": {"assignee": "ana", "claimed_at": _at(3)}}, CANCEL)
    assert claimed["status"] == "claimed" and claimed["agent"] == {"assignee": "ana", "claimed_at": _at(3)}
    reopened = merge(merge(claimed, ANSWER), AGAIN)
    assert reopened["status"] == "new"  # claimed before the new round opened


def test_an_answer_in_the_helpdesk_answers_the_open_round_and_counts_apart_from_brand_posts() -> None:
    opened = merge_all(None, [QUESTION, CANCEL], case_key(QUESTION))
    answered = record_helpdesk_answer(opened, "zd", "comment-77", _at(20), "agent-5")
    assert (answered["status"], answered["answered_at"], answered["first_response_seconds"]) == ("answered", _at(20),
                                                                                               1200.0)
    assert (answered["answered_via"], answered["answered_by"], answered["within_sla"]) == ("helpdesk", "agent-5", True)
    assert (answered["brand_posts"], answered["helpdesk_answers"], answered["customer_posts"]) == (0, 1, 2)
    assert answered["posts"][-1] == {"id": "helpdesk:zd:comment-77", "role": "brand", "at": _at(20), "priority": None,
                                     "by": "agent-5", "via": "helpdesk"}
    CASE_SCHEMA.validate(answered)
    assert record_helpdesk_answer(answered, "zd", "comment-77", _at(20), "agent-5") is answered  # replayed event

    # The channel's answer comes later: recorded, but the helpdesk's was first and stays the first response.
    both = merge(answered, ANSWER)
    assert (both["answered_at"], both["answered_via"], both["brand_posts"], both["helpdesk_answers"]) == (
        _at(20), "helpdesk", 1, 1)
    assert ANSWER["id"] in [p["id"] for p in both["posts"]]
    # Whichever came first counts, whatever order they are heard in.
    channel_first = record_helpdesk_answer(merge(opened, ANSWER), "zd", "comment-78", _at(40))
    assert (channel_first["answered_at"], channel_first["answered_via"]) == (_at(25), "channel")
    late_heard = record_helpdesk_answer(merge(opened, ANSWER), "zd", "comment-77", _at(20), "agent-5")
    assert late_heard == both

    # An answer in the helpdesk to a later round answers that round, not the first response.
    again = record_helpdesk_answer(merge(both, AGAIN), "zd", "comment-90", _at(150))
    assert (again["status"], again["reopened"], again["answered_at"], again["helpdesk_answers"]) == (
        "answered", 1, _at(20), 2)


def test_a_close_in_the_helpdesk_holds_until_the_customer_writes_again() -> None:
    opened = merge_all(None, [QUESTION, CANCEL], case_key(QUESTION))
    closed = close_from_helpdesk(opened, "zd", _at(30))
    assert (closed["status"], closed["helpdesk"]) == ("closed", {"zd": {"closed_at": _at(30)}})
    assert closed["answered_at"] is None  # closing is no answer
    CASE_SCHEMA.validate(closed)
    assert close_from_helpdesk(closed, "zd", _at(30)) is closed  # replayed
    assert merge(closed, ANSWER)["status"] == "closed"
    assert record_helpdesk_answer(closed, "zd", "c1", _at(35))["status"] == "closed"
    assert merge(closed, AGAIN)["status"] == "new"
    # A close from before the customer's last post is overtaken by it.
    assert close_from_helpdesk(merge(opened, AGAIN), "zd", _at(30))["status"] == "new"
    brand_only = merge(None, ANSWER)
    assert close_from_helpdesk(brand_only, "zd", _at(30)) is brand_only


def test_a_reassignment_in_the_helpdesk_sets_the_assignee_the_newest_winning() -> None:
    opened = merge(None, QUESTION)
    assigned = assign_from_helpdesk(opened, "zd", "agent-7", _at(5))
    assert assigned["agent"] == {"assignee": "agent-7", "claimed_at": None}
    assert assigned["helpdesk"] == {"zd": {"assignee": "agent-7", "assigned_at": _at(5)}}
    assert assigned["status"] == "new"
    CASE_SCHEMA.validate(assigned)
    assert assign_from_helpdesk(assigned, "zd", "agent-7", _at(6)) is assigned
    assert assign_from_helpdesk(assigned, "zd", "agent-3", _at(4)) is assigned  # an older one, heard late
    moved = assign_from_helpdesk(assigned, "zd", "agent-3", _at(9))
    assert (moved["agent"]["assignee"], moved["helpdesk"]["zd"]["assigned_at"]) == ("agent-3", _at(9))
    assert merge(moved, CANCEL)["agent"]["assignee"] == "agent-3"  # the case writer keeps it


def test_brand_posts_are_not_routed_and_both_kinds_fit_the_enriched_schema() -> None:
    assert ANSWER["triage"]["brand"] is True
    assert not {"queue", "priority", "due_at"} & set(ANSWER["triage"])
    for enriched in (ANSWER, QUESTION):
        assert schemas.first_error(schemas.ENRICHED_POST_SCHEMA, enriched) is None
    mixed = {**ANSWER, "triage": {**ANSWER["triage"], "queue": "social"}}
    assert schemas.first_error(schemas.ENRICHED_POST_SCHEMA, mixed) is not None


def test_cases_settings_are_validated() -> None:
    assert load_settings(environ={}).cases.author_window_hours == 24
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"TRIAGE_CASES__AUTHOR_WINDOW_HOURS": "-1"})
    assert "cases.author_window_hours" in str(err.value)
    assert load_settings(environ={"TRIAGE_CASES__ENABLED": "false"}).cases.enabled is False


# ---- the writer, against an in-memory stand-in for the two Elasticsearch calls it makes ---------------------

class FakeCases:
    """mget and bulk of one index with sequence numbers; `before_write` runs before each bulk (a rival writer)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[dict[str, Any], int]] = {}
        self.before_write: list[Any] = []
        self.refuse: set[str] = set()
        self.indices = self

    def options(self, **_: Any) -> "FakeCases":
        return self

    def exists_alias(self, name: str) -> bool:
        return True

    def mget(self, index: str, ids: list[str]) -> dict[str, Any]:
        def doc(cid: str) -> dict[str, Any]:
            if cid not in self.docs:
                return {"_id": cid, "found": False}
            source, seq = self.docs[cid]
            return {"_id": cid, "_index": "cases-000001", "found": True, "_source": json.loads(json.dumps(source)),
                    "_seq_no": seq, "_primary_term": 1}
        return {"docs": [doc(cid) for cid in ids]}

    def bulk(self, operations: str) -> dict[str, Any]:
        if self.before_write:
            self.before_write.pop(0)(self)
        lines = operations.strip().split("\n")
        items = []
        for meta_line, doc_line in zip(lines[::2], lines[1::2]):
            (op, meta), = json.loads(meta_line).items()
            cid, current = meta["_id"], self.docs.get(meta["_id"])
            if cid in self.refuse:
                status, error = 400, {"type": "document_parsing_exception", "reason": "Preview of field's value: x"}
            elif (op == "create" and current) or (op == "index" and (not current or current[1] != meta["if_seq_no"])):
                status, error = 409, {"type": "version_conflict_engine_exception"}
            else:
                self.docs[cid] = (json.loads(doc_line), (current[1] + 1) if current else 0)
                status, error = 201, None
            items.append({op: {"_id": cid, "status": status, **({"error": error} if error else {})}})
        return {"items": items}

    def close(self) -> None:
        pass


def _store(settings: Settings, fake: FakeCases) -> CasesIndex:
    return CasesIndex(fake, settings.elasticsearch, wait=lambda _: None)  # type: ignore[arg-type]


def test_the_writer_rereads_on_a_conflict_and_keeps_what_the_other_writer_added(settings: Settings) -> None:
    fake, key = FakeCases(), case_key(QUESTION)
    store = _store(settings, fake)
    assert store.update({key.case_id: (key, [QUESTION])}) == (1, {})

    def reply_recorded(es: FakeCases) -> None:  # `triage reply` appends its post id between our read and write
        doc, seq = es.docs[key.case_id]
        es.docs[key.case_id] = ({**doc, "product_reply_ids": [ANSWER["id"]]}, seq + 1)

    fake.before_write.append(reply_recorded)
    assert store.update({key.case_id: (key, [ANSWER, QUESTION])}) == (1, {})
    case = fake.docs[key.case_id][0]
    assert [p["id"] for p in case["posts"]] == [QUESTION["id"], ANSWER["id"]]
    assert (case["product_reply_ids"], case["answered_via"]) == ([ANSWER["id"]], "product")
    seq = fake.docs[key.case_id][1]
    assert store.update({key.case_id: (key, [ANSWER])}) == (0, {})  # nothing new: not even written
    assert fake.docs[key.case_id][1] == seq


def test_a_case_the_index_refuses_or_that_keeps_changing_is_reported_with_its_reason(settings: Settings) -> None:
    fake, key, other = FakeCases(), case_key(QUESTION), case_key(post(30, 0, thread="twitter:2000"))
    fake.refuse.add(key.case_id)
    written, failed = _store(settings, fake).update({key.case_id: (key, [QUESTION]), other.case_id: (other, [CANCEL])})
    assert written == 1 and set(failed) == {key.case_id}
    assert "HTTP 400 document_parsing_exception" in failed[key.case_id] and "Preview" not in failed[key.case_id]

    def rival(es: FakeCases) -> None:
        doc, seq = es.docs[other.case_id]
        es.docs[other.case_id] = (doc, seq + 1)

    fake.before_write.extend([rival] * 20)
    written, failed = _store(settings, fake).update({other.case_id: (other, [ANSWER])})
    assert written == 0 and "still conflicting" in failed[other.case_id]


@pytest.fixture()
def fake_es(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCases]:
    fake = FakeCases()
    monkeypatch.setattr(case_writer, "elasticsearch_client", lambda cfg: fake)
    yield fake


def test_maintain_cases_in_a_pipeline_counts_updates_and_dead_letters_failed_cases(settings: Settings,
                                                                                    fake_es: FakeCases) -> None:
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from core.records import Deletion
    refused = post(40, 0, thread="twitter:4000")
    fake_es.refuse.add(case_key(refused).case_id)
    with TestPipeline() as p:
        letters = (p | beam.Create([QUESTION, CANCEL, ANSWER, refused, Deletion("twitter:9", "twitter", _at(0))])
                   | case_writer.MaintainCases(settings))
        assert_that(letters | beam.Map(lambda d: (d.reason_code, d.origin, json.loads(d.payload)["id"])),
                    equal_to([("case_write_failed", f"case:{case_key(refused).case_id}", refused["id"])]))
    assert fake_es.docs[case_key(QUESTION).case_id][0]["customer_posts"] == 2
    counters = p.result.metrics().query()["counters"]
    assert sum(c.committed for c in counters if c.key.metric.name == "cases_updated") == 1


def test_the_stream_graph_maintains_cases_in_its_fused_index_step(settings: Settings) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.stream import StreamJob, build
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=PortableRunner", "--job_endpoint=localhost:8099",
                                                      "--streaming"]))
    build(pipeline, settings, StreamJob(topics=["raw"], group_id="g"))
    names = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    assert "IndexAndPublish/Output[cases]" in names and "IndexAndPublish/PublishRejected[cases]" in names


# ---- one conversation through `triage batch` and `triage reprocess` -------------------------------------------

def _raw(enriched: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "source", "text", "created_at", "thread_id", "reply_to_id", "author")
    return {k: enriched[k] for k in fields if k in enriched}


CONVERSATION = [_raw(p) for p in (
    post(1, 0, "Seit heute früh geht mein Internet nicht. Was ist da los?"),
    post(2, 5, "Wenn das nicht sofort behoben wird, kündige ich!"),
    post(3, 20, "Das tut uns leid! Wir schauen sofort nach und melden uns.", brand=True),
    post(4, 60, "Geht immer noch nicht."),
    post(5, 0, "Die App stürzt beim Login ab.", thread=None, author="u7", source="webhook"),
    post(6, 90, "Auch nach dem Update stürzt sie ab.", thread=None, author="u7", source="webhook"),
    post(7, 30, "Heute Abend Wartungsarbeiten im Netz.", thread=None, brand=True),
)]


@pytest.mark.integration
@pytest.mark.models
def test_a_conversation_through_batch_and_reprocess_counts_every_post_once(live: Settings, run_id: str,
                                                                          tmp_path: Path) -> None:
    from cli.main import main
    from conftest import own_names
    from core.clients import elasticsearch_client
    from apps import desk

    source = tmp_path / "conversation.jsonl"
    source.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in CONVERSATION), encoding="utf-8")
    with own_names({"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-conv"}, kafka=False) as settings:
        cfg = settings.elasticsearch
        es = elasticsearch_client(cfg)

        def cases() -> dict[str, dict[str, Any]]:
            es.indices.refresh(index=cfg.cases_read_alias)
            hits = es.search(index=cfg.cases_read_alias, size=100)["hits"]["hits"]
            return {h["_id"]: h["_source"] for h in hits}

        def batch(summary: str) -> dict[str, int]:
            assert main(["batch", "--input", str(source), "--output", "es", "--summary-json",
                         str(tmp_path / summary)]) == 0
            return json.loads((tmp_path / summary).read_text())["counters"]

        try:
            first = batch("first.json")
            found = cases()
            assert len(found) == 3 and first["cases_updated"] >= 3
            thread = found[case_key(post(1, 0)).case_id]
            assert [p["id"] for p in thread["posts"]] == ["twitter:1", "twitter:2", "twitter:3", "twitter:4"]
            assert (thread["customer_posts"], thread["brand_posts"], thread["reopened"]) == (3, 1, 1)
            assert (thread["status"], thread["answered_at"], thread["first_response_seconds"]) == ("new", _at(20),
                                                                                                   1200.0)
            assert (thread["answered_by"], thread["answered_via"], thread["opened_at"]) == ("TelcoHilfe", "channel",
                                                                                            _at(60))
            assert thread["priority"] in ("P1", "P2", "P3", "P4") and thread["due_at"] > _at(60)
            by_author = found[case_key(post(5, 0, thread=None, author="u7", source="webhook"), 24).case_id]
            assert (by_author["grouping"], by_author["customer_posts"], by_author["status"]) == ("author", 2, "new")
            brand_only = found[case_key(post(7, 30, thread=None, brand=True)).case_id]
            assert (brand_only["customer_posts"], brand_only["status"]) == (0, "closed")
            for case in found.values():
                CASE_SCHEMA.validate(case)
                assert "Internet" not in json.dumps(case) and "kunde_" not in json.dumps(case)
            es.indices.refresh(index=cfg.read_alias)
            queued = {p["id"] for p in desk.queue(es, cfg)["posts"]}
            assert queued == {"twitter:1", "twitter:2", "twitter:4", "webhook:5", "webhook:6"}  # no brand posts

            again = batch("again.json")
            assert again["cases_updated"] == 0 and cases() == found  # not even rewritten
            assert main(["reprocess", "--workdir", str(tmp_path / "reprocess")]) == 0
            assert cases() == found
            assert set(es.indices.get_alias(name=cfg.cases_write_alias).body) == {f"{cfg.cases_read_alias}-000001"}

            # The brand answers again while `triage reply` records its reply id between our read and our write:
            # the index refuses the stale write (409), the writer reads again, and neither change is lost.
            store, key = CasesIndex(es, cfg, wait=lambda _: None), case_key(post(1, 0))
            write = store._write

            def reply_recorded_first(writes: Any) -> Any:
                es.update(index=cfg.cases_write_alias, id=key.case_id, doc={"product_reply_ids": ["twitter:8"]})
                store._write = write  # type: ignore[method-assign]
                return write(writes)

            store._write = reply_recorded_first  # type: ignore[method-assign]
            assert store.update({key.case_id: (key, [post(8, 70, "Jetzt sollte es gehen.", brand=True)])}) == (1, {})
            case = cases()[key.case_id]
            assert (case["status"], case["brand_posts"], case["product_reply_ids"]) == ("answered", 2, ["twitter:8"])
            assert case["first_response_seconds"] == 1200.0 and case["reopened"] == 1
        finally:
            es.close()
    client = elasticsearch_client(live.elasticsearch)  # teardown removed the cases index and its template
    try:
        assert not client.indices.exists(index=f"{cfg.cases_read_alias}-000001")
        assert not client.indices.exists_index_template(name=cfg.cases_read_alias)
    finally:
        client.close()


# ---- a reply sent from the product comes back through the connector and answers the case ---------------------

def _customer_status(channels: Any, native: str, text: str, created_at: str) -> dict[str, Any]:
    """A customer's public status with #telco in Mastodon's Status format (the brand's template, a customer's
    account)."""
    template = channels.fixtures["mastodon"]["status"]
    return {**template, "id": native, "created_at": created_at, "in_reply_to_account_id": None, "application": None,
            "content": f"<p>{text} #telco</p>", "tags": [{"name": "telco", "url": "https://social.example/tags/telco"}],
            "uri": f"https://social.example/users/kunde9/statuses/{native}",
            "url": f"https://social.example/@kunde9/{native}",
            "account": {**template["account"], "id": "109000000000000042", "username": "kunde9", "acct": "kunde9",
                        "display_name": "Kundin Neun", "url": "https://social.example/@kunde9"}}


@pytest.mark.integration
def test_a_reply_sent_with_triage_reply_comes_back_through_the_connector_and_answers_the_case(
        live: Settings, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import yaml

    from cli.main import main
    from conftest import own_names
    from connectors import run as connectors_run
    from connectors.testing import ListSink
    from core.clients import elasticsearch_client
    from fake_apis import FakeChannels

    monkeypatch.setenv("MASTODON_REPLY_TOKEN", "masto-user-token")
    with FakeChannels() as channels:
        sources = tmp_path / "sources.yaml"
        sources.write_text(yaml.safe_dump({"checkpoint_db": str(tmp_path / "connectors.sqlite"), "sources": [
            {"type": "mastodon", "name": "masto", "url": f"{channels.url}/mastodon", "hashtags": ["telco"],
             "brand_accounts": ["telco_hilft"],
             "reply_accounts": [{"account": "telco_hilft@social.example", "token_env": "MASTODON_REPLY_TOKEN"}]}]}))
        host = channels.url.split("//")[1]
        channels.mastodon_timeline.append(_customer_status(channels, "11340001", "Seit heute früh kein Internet. "
                                                           "Wann geht es wieder?", "2026-12-02T08:30:00.000Z"))

        env = {"TRIAGE_ES_INDEX_PREFIX": f"test-{run_id}-reply", "TRIAGE_ENRICHMENT__STEPS": "[language, pii]",
               "TRIAGE_REPLIES__LEDGER_DB": str(tmp_path / "replies.sqlite")}
        with own_names(env, kafka=False) as settings:
            cfg = settings.elasticsearch
            es = elasticsearch_client(cfg)

            def connect_once(name: str) -> Path:
                """One pass of the connector (checkpoints kept between passes) into a JSONL for `triage batch`."""
                sink = ListSink()
                with ThreadPoolExecutor(1) as pool:  # off the main thread: the runner leaves pytest's signals alone
                    counts = pool.submit(connectors_run.run, settings, str(sources), once=True, sink=sink).result(60)
                assert -1 not in counts.values() and sum(counts.values()) == len(sink.posts) and not sink.dead_letters
                delivered = tmp_path / name
                delivered.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in sink.posts),
                                     encoding="utf-8")
                return delivered

            def cases() -> dict[str, dict[str, Any]]:
                es.indices.refresh(index=cfg.cases_read_alias)
                return {h["_id"]: h["_source"] for h in es.search(index=cfg.cases_read_alias, size=100)["hits"]["hits"]}

            def batch(source: Path, summary: str) -> dict[str, int]:
                assert main(["batch", "--input", str(source), "--output", "es", "--summary-json",
                             str(tmp_path / summary)]) == 0
                return json.loads((tmp_path / summary).read_text())["counters"]

            try:
                customer = f"mastodon:{host}:11340001"
                first = connect_once("customer.jsonl")
                assert [json.loads(line)["id"] for line in first.read_text().splitlines()] == [customer]
                batch(first, "customer.json")
                [(case_id, case)] = cases().items()
                assert (case["status"], case["last_customer_post_id"], case["answered_at"]) == ("new", customer, None)

                assert main(["reply", case_id, "--text", "Danke! Die Störung ist seit 09:00 behoben.", "--yes",
                             "--sources", str(sources)]) == 0
                [published] = channels.published["mastodon"]
                reply_id = f"mastodon:{host}:{published['id']}"
                assert published["in_reply_to_id"] == "11340001" and published["visibility"] == "public"
                recorded = cases()[case_id]
                assert (recorded["product_reply_ids"], recorded["status"]) == ([reply_id], "new")  # not answered yet

                read_back = connect_once("reply.jsonl")
                [brand_post] = [json.loads(line) for line in read_back.read_text().splitlines()]
                assert (brand_post["id"], brand_post["thread_id"]) == (reply_id, customer)
                assert brand_post["author"]["is_brand"] is True
                assert batch(read_back, "reply.json")["cases_updated"] == 1
                answered = cases()[case_id]
                assert (answered["status"], answered["answered_via"], answered["answered_at"]) == (
                    "answered", "product", published["created_at"])
                assert answered["first_response_seconds"] == 1800.0  # 08:30 -> 09:00
                assert (answered["customer_posts"], answered["brand_posts"], answered["reopened"]) == (1, 1, 0)
                assert [p["id"] for p in answered["posts"]] == [customer, reply_id]
                CASE_SCHEMA.validate(answered)

                assert batch(read_back, "again.json")["cases_updated"] == 0  # the same delivery again
                assert cases() == {case_id: answered}
            finally:
                es.close()
