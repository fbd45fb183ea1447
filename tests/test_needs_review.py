"""Calibrated doubt: temperature scaling and its ECE, the review threshold, `needs_review` on the enriched post,
and routing that never sends an uncertain post to the unanswered spam queue."""
from __future__ import annotations

from typing import Any

import jsonschema
import torch

import schemas
from models import calibration
from models.understanding import Head, review_fields
from triage.routing import decide, load_rules, parse_rules, resolve_rules_file

RULES = load_rules("builtin:telecom-de")
MONDAY_10 = "2026-11-23T09:00:00Z"


def _overconfident(n: int = 3000, seed: int = 0, unsure: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a 3-class model that is right about 90% of the time but says 98%+; the first `unsure` posts are
    near-ties that are right 40% of the time."""
    generator = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 3, (n,), generator=generator)
    right_share = torch.full((n,), 0.9)
    right_share[:unsure] = 0.4
    right = torch.rand(n, generator=generator) < right_share
    predicted = torch.where(right, gold, (gold + torch.randint(1, 3, (n,), generator=generator)) % 3)
    logits = torch.randn(n, 3, generator=generator) * 0.3
    margin = torch.full((n,), 5.0)
    margin[:unsure] = 0.3
    logits[torch.arange(n), predicted] += margin
    return logits, gold


def test_temperature_scaling_brings_an_overconfident_head_under_the_ece_target() -> None:
    logits, gold = _overconfident()
    before = calibration.expected_calibration_error(torch.softmax(logits, 1), gold)
    fitted = calibration.calibrate(logits, gold)
    assert before > 0.07 and fitted["ece_before"] == before
    assert fitted["temperature"] > 1.2  # softened
    assert fitted["ece_after"] <= 0.02
    # the order of the scores is kept: no prediction changes
    assert torch.equal((logits / fitted["temperature"]).argmax(1), logits.argmax(1))
    # every post here is right nine times in ten once calibrated: none is more likely wrong, none is flagged
    assert fitted["review_share"] == 0.0 and fitted["accuracy_flagged"] is None


def test_the_review_threshold_flags_mostly_wrong_predictions() -> None:
    logits, gold = _overconfident(seed=1, unsure=1000)  # a third are near-ties, and 60% of those are wrong
    fitted = calibration.calibrate(logits, gold)
    assert 0.3 <= fitted["review_below"] <= 0.95
    assert fitted["accuracy_flagged"] < 0.5 < fitted["accuracy_not_flagged"]
    assert 0.2 < fitted["review_share"] < 0.6


def test_a_doubtful_head_marks_the_post_with_its_two_best_labels() -> None:
    linear = torch.nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.9, 0.0], [0.0, 1.0]]))
        linear.bias.zero_()
    head = Head(["complaint", "question", "praise"], linear, temperature=1.0, review_below=0.5)
    sure, unsure = head.classify(torch.tensor([[0.0, 8.0], [1.0, 0.0]]))
    assert "review" not in sure and unsure["review"] == ["complaint", "question"]
    result = {"intent": unsure, "sentiment": {"label": "neutral", "score": 0.9}}
    assert review_fields(result) == {"needs_review": True, "review_labels": {"intent": ["complaint", "question"]}}
    assert "review" not in result["intent"]  # carried once, on the post
    assert review_fields({"intent": sure}) == {"needs_review": False}


def _post(intent: str, needs_review: bool, text: str = "Jetzt gratis Router sichern!!! Link in Bio") -> dict[str, Any]:
    post = {"id": "t:1", "source": "twitter", "text": text, "created_at": MONDAY_10, "author": {"followers": 10},
            "language": {"code": "de", "score": 0.99}, "sentiment": {"label": "negative", "score": 0.5},
            "intent": {"label": intent, "score": 0.9}, "topic": {"label": None, "score": 0.5},
            "pii": {"found": False, "types": [], "spans": []}, "needs_review": needs_review}
    if needs_review:
        post["review_labels"] = {"intent": [intent, "complaint"]}
    return post


def test_an_uncertain_post_never_goes_to_the_spam_queue() -> None:
    assert decide(RULES, _post("spam", needs_review=False)).queue == "spam"
    decision = decide(RULES, _post("spam", needs_review=True))
    assert decision.queue != "spam" and decision.due_at is not None  # someone answers it, on an SLA
    assert "Modell unsicher: Labels bitte prüfen" in decision.reasons
    assert any(reason.startswith("spam: not applied, the model is unsure") for reason in decision.reasons)


def test_the_rules_file_can_route_needs_review_posts() -> None:
    text = resolve_rules_file("builtin:telecom-de").read_text(encoding="utf-8").replace(
        'then: {reason: "Modell unsicher: Labels bitte prüfen"}',
        'then: {queue: technical, priority: P2, reason: "Modell unsicher: Labels bitte prüfen"}')
    rules = parse_rules(text)
    assert (decide(rules, _post("praise", needs_review=True)).queue,
            decide(rules, _post("praise", needs_review=True)).priority) == ("technical", "P2")
    assert decide(rules, _post("praise", needs_review=False)).queue != "technical"


def test_needs_review_and_its_labels_are_part_of_the_enriched_post_schema() -> None:
    schema = schemas.load_json(schemas.ENRICHED_POST_SCHEMA)
    fields = {"needs_review": schema["properties"]["needs_review"],
              "review_labels": schema["properties"]["review_labels"]}
    jsonschema.validate({"needs_review": True, "review_labels": {"intent": ["question", "cancellation"]}},
                        {"type": "object", "properties": fields})
    bad = {"needs_review": True, "review_labels": {"intent": ["question"]}}
    try:
        jsonschema.validate(bad, {"type": "object", "properties": fields})
    except jsonschema.ValidationError as error:
        assert "is too short" in error.message
    else:
        raise AssertionError("one label passed for two")
