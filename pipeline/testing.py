"""Testing kit for the Beam graph: enrichment steps that load no model, for EnrichPosts under TestPipeline.

Each fake has the name, Beam label, `requires` and `provides` of the real step it stands for
(pipeline/steps/*.py, triage/step.py) and adds fields of the same shape (schemas/enriched_post.v1),
decided by a few fixed rules on the text, so a graph test runs in a second and knows what to expect:

    with TestPipeline() as p:
        out = p | beam.Create(records) | EnrichPosts(settings, steps=FAKE_STEPS)
        assert_that(out["enriched"], ...)

`failing(step, when)` makes a step raise on every batch holding a post whose text contains `when`.
The routing fake lives here, not in triage/, because the pipeline layer must not import triage.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from pipeline.steps.base import EnrichmentStep, Post

VERSION = "fake-1"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
CANCEL_WORDS = ("kündig", "cancel")
NEGATIVE_WORDS = ("kein", "nicht", "katastrophe", "never", "not ", "no ")


class FakeModel:
    """What a fake step "loads" (Beam shares models by weak reference, so not a plain str)."""

    def __init__(self, name: str) -> None:
        self.name, self.version = name, VERSION


class _FakeStep(EnrichmentStep[FakeModel]):
    def load_model(self) -> FakeModel:
        return FakeModel(self.name)

    def version(self, model: FakeModel) -> str:
        return model.version

    def enrich(self, posts: Sequence[Post], model: FakeModel) -> list[Post]:
        return [{**post, **self.fields(post)} for post in posts]

    def fields(self, post: Post) -> dict[str, Any]:
        raise NotImplementedError


class FakeLanguage(_FakeStep):
    """`language`: the post's lang_hint (its first two letters), else 'en'; score 1.0."""
    name, label, provides = "language", "DetectLanguage", ("language",)

    def fields(self, post: Post) -> dict[str, Any]:
        return {"language": {"code": (post.get("lang_hint") or "en")[:2].lower(), "score": 1.0}}


class FakePii(_FakeStep):
    """`pii`: e-mail addresses only; text_redacted / title_redacted with them replaced by [EMAIL]."""
    name, label, provides = "pii", "DetectPersonalData", ("pii", "text_redacted", "title_redacted")

    def fields(self, post: Post) -> dict[str, Any]:
        spans = [{"type": "email", "start": m.start(), "end": m.end()} for m in EMAIL.finditer(post["text"])]
        title = post.get("title")
        return {"pii": {"found": bool(spans) or bool(title and EMAIL.search(title)),
                        "types": ["email"] if spans or (title and EMAIL.search(title)) else [], "spans": spans},
                "text_redacted": EMAIL.sub("[EMAIL]", post["text"]),
                "title_redacted": EMAIL.sub("[EMAIL]", title) if title else None}


def _classification(label: str, labels: Sequence[str]) -> dict[str, Any]:
    return {"label": label, "score": 1.0, "scores": {name: 1.0 if name == label else 0.0 for name in labels}}


def fake_intent(text: str) -> str:
    lowered = text.lower()
    if any(word in lowered for word in CANCEL_WORDS):
        return "cancellation"
    return "question" if "?" in text else "complaint"


def fake_sentiment(text: str) -> str:
    lowered = f"{text.lower()} "
    return "negative" if any(word in lowered for word in NEGATIVE_WORDS) else "neutral"


class FakeUnderstanding(_FakeStep):
    """sentiment negative when a negative word occurs (else neutral); intent cancellation / question / complaint;
    relevance always relevant; topic label null."""
    name, label = "understanding", "ClassifySentimentIntentTopic"
    provides = ("sentiment", "intent", "relevance", "topic")

    def fields(self, post: Post) -> dict[str, Any]:
        text = post["text"]
        return {"sentiment": _classification(fake_sentiment(text), ("negative", "neutral", "positive")),
                "intent": _classification(fake_intent(text), ("complaint", "question", "cancellation", "other")),
                "relevance": _classification("relevant", ("relevant", "irrelevant")),
                "topic": {"label": None, "score": 0.0}}


class FakeRouting(_FakeStep):
    """`triage`: cancellations to queue 'retention' at P1, the rest to 'general' at P3; private when PII was found."""
    name, label = "routing", "RouteAndPrioritize"
    requires = ("language", "sentiment", "intent", "pii")
    provides = ("triage",)

    def fields(self, post: Post) -> dict[str, Any]:
        cancel = post["intent"]["label"] == "cancellation"
        return {"triage": {"queue": "retention" if cancel else "general", "priority": "P1" if cancel else "P3",
                           "due_at": None, "reasons": [f"intent {post['intent']['label']}"],
                           "private_channel": bool(post["pii"]["found"]), "suggested_reply": None,
                           "rules_version": VERSION}}


FAKE_STEPS: list[type[EnrichmentStep[Any]]] = [FakeLanguage, FakePii, FakeUnderstanding, FakeRouting]


class StepFailed(RuntimeError):
    """What a step made by `failing` raises."""


def failing(step: type[_FakeStep], when: str) -> type[_FakeStep]:
    """`step`, raising StepFailed for any batch that holds a post whose text contains `when`."""

    def enrich(self: _FakeStep, posts: Sequence[Post], model: FakeModel) -> list[Post]:
        if any(when in post["text"] for post in posts):
            raise StepFailed(f"{self.name} failed on purpose")
        return step.enrich(self, posts, model)

    return type(f"Failing{step.__name__}", (step,), {"enrich": enrich})
