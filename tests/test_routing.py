"""Routing rules, rule by rule, on the shipped telecom rules; validation errors; hot reload."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from triage import routing
from triage.routing import RulesError, decide, load_rules, parse_rules

RULES = load_rules("builtin:telecom-de")
TELECOM = routing.resolve_rules_file("builtin:telecom-de").read_text(encoding="utf-8")
# Monday 2026-11-23, 10:00 in Berlin (UTC+1): inside business hours.
MONDAY_10 = "2026-11-23T09:00:00Z"


def post(text: str = "Hallo", intent: str = "other", sentiment: str = "neutral", score: float = 0.6,
         topic: str | None = None, pii: list[str] | None = None, language: str = "de", followers: int | None = None,
         created_at: str = MONDAY_10, intent_score: float = 0.9) -> dict[str, Any]:
    return {"id": "t:1", "source": "twitter", "text": text, "created_at": created_at,
            "author": {"followers": followers}, "language": {"code": language, "score": 0.99},
            "sentiment": {"label": sentiment, "score": score}, "intent": {"label": intent, "score": intent_score},
            "topic": {"label": topic, "score": 0.9 if topic else 0.5},
            "pii": {"found": bool(pii), "types": pii or [], "spans": []}}


def test_spam_goes_to_the_spam_queue_without_deadline_and_stops_evaluation() -> None:
    d = decide(RULES, post("Gewinnspiel! Jetzt kündigen und gewinnen", intent="spam"))
    assert (d.queue, d.priority, d.due_at) == ("spam", "P4", None)
    assert d.reasons == ["Spam oder Werbung"]  # the cancellation keyword rule never ran


def test_an_unsure_spam_label_does_not_hide_a_post_with_bank_details() -> None:
    d = decide(RULES, post("Meine IBAN ist ..., bitte überweist mir das Geld zurück!", intent="spam",
                           intent_score=0.46, pii=["iban"]))
    assert d.queue != "spam" and d.priority == "P1" and d.due_at is not None


@pytest.mark.parametrize("pii", [["iban"], ["customer_number", "address"]])
def test_a_confident_spam_label_does_not_hide_a_post_with_personal_data(pii: list[str]) -> None:
    d = decide(RULES, post("Überweist mir endlich mein Geld zurück, Kundennr. 12345678", intent="spam",
                           intent_score=0.95, pii=pii))
    assert d.queue != "spam" and d.due_at is not None and d.private_channel


def test_cancellation_threat_is_retention_p1_private_with_the_queue_sla() -> None:
    d = decide(RULES, post("Noch einmal und ich bin weg.", intent="cancellation", sentiment="negative"))
    assert (d.queue, d.priority, d.private_channel) == ("retention", "P1", True)
    assert d.due_at == "2026-11-23T09:30:00.000Z"  # retention's own P1 SLA: 30 minutes
    assert d.suggested_reply and "Direktnachricht" in d.suggested_reply


def test_cancellation_keyword_catches_what_the_model_missed() -> None:
    d = decide(RULES, post("Überlege ernsthaft zu kündigen", intent="question"))
    assert (d.queue, d.priority) == ("retention", "P2")
    assert "Kündigungswort im Text" in d.reasons


def test_network_outage_is_technical_around_the_clock() -> None:
    sunday_night = "2026-11-22T02:00:00Z"  # 03:00 Sunday in Berlin: business queues are closed
    d = decide(RULES, post("Seit gestern geht nichts", intent="complaint", topic="network", created_at=sunday_night))
    assert (d.queue, d.priority) == ("technical", "P2")
    assert d.due_at == "2026-11-22T06:00:00.000Z"  # 240 minutes later, no waiting for Monday


def test_billing_complaint_goes_private_because_it_needs_the_account() -> None:
    d = decide(RULES, post("Rechnung doppelt abgebucht", intent="complaint", topic="billing", sentiment="negative"))
    assert (d.queue, d.priority, d.private_channel) == ("billing", "P2", True)
    assert "needs account data: answer in a private channel" in d.reasons


def test_very_negative_posts_are_raised_to_p2_and_plain_complaints_are_p3() -> None:
    assert decide(RULES, post("Unfassbar schlecht", intent="complaint", sentiment="negative", score=0.95)).priority == "P2"
    d = decide(RULES, post("Nicht so toll", intent="complaint", sentiment="negative", score=0.6))
    assert (d.queue, d.priority) == ("social", "P3")


def test_purchase_interest_goes_to_sales_and_questions_stay_social() -> None:
    assert (decide(RULES, post("Gibt es das iPhone im Tarif?", intent="purchase_interest")).queue) == "sales"
    d = decide(RULES, post("Wie ändere ich mein Passwort?", intent="question", topic="app"))
    assert (d.queue, d.priority, d.private_channel) == ("technical", "P3", False)


def test_influencers_are_raised_one_priority() -> None:
    assert decide(RULES, post("Wie geht das?", intent="question", followers=50_000)).priority == "P2"
    assert decide(RULES, post("Wie geht das?", intent="question", followers=500)).priority == "P3"
    assert decide(RULES, post("Wie geht das?", intent="question", followers=None)).priority == "P3"


def test_published_bank_details_are_p1_and_private_with_the_types_named() -> None:
    d = decide(RULES, post("Bucht von DE89... ab", intent="question", pii=["iban"]))
    assert (d.priority, d.private_channel) == ("P1", True)
    assert "personal data in the post: iban" in d.reasons


def test_no_matching_rule_gives_the_default_with_a_readable_reason() -> None:
    d = decide(RULES, post("Schönes Wetter heute", intent="other"))
    assert (d.queue, d.priority, d.private_channel, d.suggested_reply) == ("social", "P4", False, None)
    assert d.reasons == ["no rule matched: default queue and priority"]


def test_business_hours_skip_sundays_and_holidays() -> None:
    saturday_19 = "2026-11-21T18:00:00Z"  # P4 = 1440 business minutes: Sat 60 + Mon 720 + Tue 660
    assert decide(RULES, post("Danke!", intent="praise", created_at=saturday_19)).due_at == "2026-11-24T18:00:00.000Z"
    before_christmas = "2026-12-23T18:00:00Z"  # Wed 19:00; 24-26 Dec are holidays, 27 Dec a Sunday
    assert decide(RULES, post("Danke!", intent="praise", created_at=before_christmas)).due_at == "2026-12-29T18:00:00.000Z"
    night = "2026-11-23T02:00:00Z"  # Monday 03:00: the clock starts when the queue opens at 08:00
    assert decide(RULES, post("Danke!", intent="praise", created_at=night)).due_at == "2026-11-24T19:00:00.000Z"  # Mon 720 + Tue 720


def test_reply_language_follows_the_post_with_english_as_fallback() -> None:
    english = decide(RULES, post("I want to cancel", intent="cancellation", language="en"))
    french = decide(RULES, post("Je veux résilier", intent="cancellation", language="fr"))
    assert english.suggested_reply == french.suggested_reply
    assert english.suggested_reply and "direct message" in english.suggested_reply


def test_time_and_day_conditions_use_the_posts_local_time() -> None:
    text = TELECOM.replace("rules:\n", "rules:\n  - name: night shift\n    when: {hours: \"22:00-06:00\", days: [sat, sun]}\n"
                           "    then: {priority: P1, reason: night}\n", 1)
    rules = parse_rules(text)
    assert decide(rules, post(created_at="2026-11-21T22:30:00Z")).priority == "P1"  # Sat 23:30 local
    assert decide(rules, post(created_at="2026-11-22T04:59:00Z")).priority == "P1"  # Sun 05:59 local
    assert decide(rules, post(created_at="2026-11-22T05:00:00Z")).priority == "P4"  # Sun 06:00 local
    assert decide(rules, post(created_at="2026-11-23T22:30:00Z")).priority == "P4"  # Mon night


def test_decisions_depend_on_the_post_not_on_the_clock() -> None:
    p = post("Ich kündige", intent="cancellation")
    assert decide(RULES, p) == decide(RULES, p)
    undated = {**p, "created_at": None}
    from datetime import datetime, timezone
    now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    assert decide(RULES, undated, now=now).due_at == decide(RULES, p).due_at


@pytest.mark.parametrize("edit, expected, on_line", [
    (("intent: [spam]", "intent: [spma]"), "rules.0.when.intent: Value error, unknown intent spma", "spma"),
    (("then: {queue: spam, priority: P4", "then: {queue: spam, priority: P9"), "rules.0.then.priority", "P9"),
    (("queue: retention, priority: P1,", "queue: retension, priority: P1,"), "queue 'retension' is not defined",
     "retension"),
    (("  P4: 1440\n\nqueues", "\nqueues"), "missing P4", "sla_minutes:"),  # the key's line, not its first child's
    (("timezone: Europe/Berlin", "timezone: Europe/Bonn"), "unknown time zone", "Bonn"),
    (("hours: around_the_clock", "hours: always"), "queues.technical.hours", "always"),
    (("min_followers: 10000", "min_folowers: 10000"), "Extra inputs are not permitted", "min_folowers"),
])
def test_invalid_rules_name_the_file_line_and_problem(edit: tuple[str, str], expected: str, on_line: str) -> None:
    broken = TELECOM.replace(*edit, 1)
    assert broken != TELECOM
    with pytest.raises(RulesError) as err:
        parse_rules(broken, "my-rules.yaml")
    message = str(err.value)
    assert expected in message
    line = int(message.split("my-rules.yaml:")[1].split(":")[0])
    assert on_line in broken.splitlines()[line - 1]


def test_rules_reload_when_the_file_changes_and_a_broken_edit_keeps_the_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(TELECOM, encoding="utf-8")
    live = routing.ReloadingRules(str(path), check_every_s=0)
    assert decide(live.current(), post(intent="praise")).priority == "P4"
    path.write_text(TELECOM.replace("version: telecom-de-2026-11", "version: v2").replace(
        "then: {priority: P4, reason: \"Lob - bedanken\"}", "then: {priority: P2, reason: \"Lob\"}"), encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    rules = live.current()
    assert (rules.version, decide(rules, post(intent="praise")).priority) == ("v2", "P2")
    path.write_text("rules: [", encoding="utf-8")
    os.utime(path, ns=(2, 2))
    assert live.current().version == "v2"


def test_unknown_builtin_rules_name_the_shipped_ones() -> None:
    with pytest.raises(RulesError, match="builtin:telecom-de"):
        load_rules("builtin:airline")
