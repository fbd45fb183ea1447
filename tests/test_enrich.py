"""EnrichPosts under Beam's TestPipeline with the fake steps of pipeline/testing.py (no model is loaded),
and the record parser it starts with (core.records.parse_post)."""
from __future__ import annotations

import json
from typing import Any, Callable

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

import schemas
from core.config import Settings
from core.records import DeadLetter, RawRecord, parse_post
from pipeline.enrich import EnrichPosts
from pipeline.testing import FAKE_STEPS, FakeLanguage, FakePii, FakeRouting, FakeUnderstanding, StepFailed, failing

STEP_FIELDS = ("language", "pii", "text_redacted", "title_redacted", "sentiment", "intent", "relevance", "topic",
               "triage", "model_versions", "processed_at", "schema_version")


def _post(native_id: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"test:{native_id}", "source": "test", "text": text, **fields}


def _record(value: Any, origin: str, produced_ms: int | None = None) -> RawRecord:
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawRecord(payload, origin, produced_ms)


GOOD = [_post("1", "Ich kündige, kein Netz seit Tagen", lang_hint="de"),
        _post("2", "Wann kommt der Techniker? Mail an kunde@example.org", title="Termin"),
        _post("3", "Danke, läuft wieder")]
BAD = {"file:bad#1": b"{not json", "file:bad#2": json.dumps({"id": "test:x", "source": "test"}).encode(),
       "file:bad#3": b"[" * 100 + b"]" * 100}


def _settings(settings: Settings, batch: int) -> Settings:
    enrichment = settings.enrichment.model_copy(update={"min_batch_size": 1, "max_batch_size": batch})
    return settings.model_copy(update={"enrichment": enrichment})


def _run(settings: Settings, records: list[RawRecord], steps: list, check_enriched: Callable,
         check_letters: Callable) -> None:
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(records) | EnrichPosts(settings, steps=steps)
        letters = tuple(out["dead_letters"]) | "AllDeadLetters" >> beam.Flatten()
        assert_that(out["enriched"], check_enriched, label="CheckEnriched")
        assert_that(letters, check_letters, label="CheckDeadLetters")


def test_fake_steps_match_the_real_ones_by_name_order_and_fields(settings: Settings) -> None:
    from pipeline.steps.registry import resolve
    real_steps = resolve(settings.enrichment.steps)  # the configured order: language, pii, understanding, routing
    assert [fake.name for fake in FAKE_STEPS] == settings.enrichment.steps
    for fake, real in zip(FAKE_STEPS, real_steps):
        assert (fake.name, fake.label, fake.requires, fake.provides) == (real.name, real.label, real.requires,
                                                                         real.provides)


def test_good_records_are_enriched_by_every_step_and_bad_ones_are_dead_letters(settings: Settings) -> None:
    records = [_record(p, f"file:good#{i}", produced_ms=1000 + i) for i, p in enumerate(GOOD)]
    records += [RawRecord(payload, origin) for origin, payload in BAD.items()]

    def check_enriched(posts: list[dict]) -> None:
        assert sorted(p["id"] for p in posts) == ["test:1", "test:2", "test:3"]
        by_id = {p["id"]: p for p in posts}
        for post in posts:
            assert all(field in post for field in STEP_FIELDS), sorted(set(STEP_FIELDS) - set(post))
            assert post["model_versions"] == {s.name: "fake-1" for s in FAKE_STEPS}
            public = {k: v for k, v in post.items() if not k.startswith("_")}
            assert schemas.first_error(schemas.ENRICHED_POST_SCHEMA, public) is None
        assert by_id["test:1"]["language"]["code"] == "de" and by_id["test:1"]["triage"]["queue"] == "retention"
        assert by_id["test:1"]["_produced_ms"] == 1000  # carried for latency, never written out
        assert by_id["test:2"]["intent"]["label"] == "question" and by_id["test:2"]["pii"]["types"] == ["email"]
        assert by_id["test:2"]["text_redacted"].endswith("Mail an [EMAIL]")
        assert by_id["test:2"]["triage"]["private_channel"] is True
        assert by_id["test:3"]["sentiment"]["label"] == "neutral" and by_id["test:3"]["triage"]["priority"] == "P3"

    def check_letters(letters: list[DeadLetter]) -> None:
        got = sorted((d.origin, d.reason_code, d.payload) for d in letters)
        assert got == [("file:bad#1", "invalid_json", BAD["file:bad#1"]),
                       ("file:bad#2", "schema_violation", BAD["file:bad#2"]),
                       ("file:bad#3", "nested_too_deep", BAD["file:bad#3"])]

    _run(settings, records, FAKE_STEPS, check_enriched, check_letters)


def _run_with_a_failing_step(settings: Settings, check_letters: Callable) -> None:
    posts = [_post("1", "alles gut"), _post("2", "boom: this one breaks the step"), _post("3", "auch gut")]
    steps = [FakeLanguage, FakePii, failing(FakeUnderstanding, "boom"), FakeRouting]

    def check_enriched(enriched: list[dict]) -> None:
        assert sorted(p["id"] for p in enriched) == ["test:1", "test:3"]

    _run(_settings(settings, batch=1), [_record(p, f"file:x#{i}") for i, p in enumerate(posts)], steps,
         check_enriched, check_letters)


def test_a_step_that_raises_turns_its_batch_into_enrichment_failed_dead_letters(settings: Settings) -> None:
    def check_letters(letters: list[DeadLetter]) -> None:
        assert [(d.reason_code, d.origin) for d in letters] == [("enrichment_failed", "post:test:2")]
        assert letters[0].reason.startswith("step understanding failed: ")
        assert json.loads(letters[0].payload)["id"] == "test:2"  # the post as it reached the failing step

    _run_with_a_failing_step(settings, check_letters)


def test_an_enrichment_failed_reason_names_the_exception(settings: Settings) -> None:
    def check_letters(letters: list[DeadLetter]) -> None:
        assert [d.reason for d in letters] == [f"step understanding failed: {StepFailed.__name__}"]

    _run_with_a_failing_step(settings, check_letters)


def test_steps_default_to_the_configured_registry(settings: Settings) -> None:
    from pipeline.steps.registry import resolve
    assert EnrichPosts(settings).steps == resolve(settings.enrichment.steps)
    assert EnrichPosts(settings, steps=FAKE_STEPS).names == ["language", "pii", "understanding", "routing"]


# --- parse_post: every reason code, and what a good record keeps ---------------------------------------------

LIMITS = {"max_record_bytes": 2000, "max_text_chars": 50}


@pytest.mark.parametrize("payload,reason_code", [
    (b"x" * 2001, "oversized_record"),
    (b'{"text": "\xff"}', "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"),
    (b"[" * 100 + b"]" * 100, "nested_too_deep"),
    (b'["a list"]', "not_an_object"),
    (json.dumps(_post("1", "   \n")).encode(), "empty_text"),
    (json.dumps({"id": "test:1", "source": "test"}).encode(), "schema_violation"),
    (json.dumps(_post("1", "x" * 51)).encode(), "text_too_long"),
    (json.dumps(_post("1", "ok", title="t" * 51)).encode(), "title_too_long"),
])
def test_parse_post_names_the_reason_and_keeps_origin_and_payload(payload: bytes, reason_code: str) -> None:
    letter = parse_post(RawRecord(payload, "kafka:raw/0/7"), **LIMITS)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason_code, letter.origin, letter.payload) == (reason_code, "kafka:raw/0/7", payload)
    assert letter.reason and letter.failed_at.endswith("Z")


def test_parse_post_dead_letters_a_record_that_already_stopped_a_worker() -> None:
    payload = json.dumps(_post("1", "ok")).encode()
    letter = parse_post(RawRecord(payload, "kafka:raw/0/8", failed_attempts=2), **LIMITS)
    assert isinstance(letter, DeadLetter) and letter.reason_code == "poison_record" and letter.payload == payload
    assert "2 times" in letter.reason


def test_parse_post_returns_the_post_with_the_produce_time() -> None:
    post = _post("1", "Kein Netz", title="Störung")
    assert parse_post(RawRecord(json.dumps(post).encode(), "file:a#1"), **LIMITS) == post
    assert parse_post(RawRecord(json.dumps(post).encode(), "kafka:raw/0/1", 1700), **LIMITS) == {**post,
                                                                                               "_produced_ms": 1700}


def test_a_reason_never_contains_the_offending_value() -> None:
    secret = "DE89370400440532013000"
    letter = parse_post(RawRecord(json.dumps({"id": 5, "source": "test", "text": secret}).encode(), "f"), **LIMITS)
    assert isinstance(letter, DeadLetter) and letter.reason_code == "schema_violation" and secret not in letter.reason
