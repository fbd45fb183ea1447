"""Optional per-task models from the Hugging Face hub (or a local folder), replacing a built-in head.

For teams with network access and a preferred model: a sentiment classifier (e.g.
cardiffnlp/twitter-xlm-roberta-base-sentiment) or an NLI model for zero-shot intent (e.g.
MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7). Each costs a forward pass of its own on
top of the shared encoder, so the default stays the trained heads.
"""
from __future__ import annotations

from typing import Any, Sequence

from transformers import pipeline

from core.labels import INTENT_LABELS, SENTIMENT_LABELS

# How the built-in intent labels are phrased for an NLI model ("This post is {}.").
INTENT_HYPOTHESES = {
    "complaint": "a complaint that a product or service failed",
    "question": "a question asking for information or help",
    "cancellation": "a threat or announcement to cancel or switch provider",
    "praise": "praise or thanks",
    "purchase_interest": "interest in buying, upgrading or an offer",
    "spam": "spam, advertising or a scam",
    "other": "news or chat with nothing to act on",
}


def check_hypotheses(hypotheses: dict[str, str], labels: Sequence[str] = INTENT_LABELS) -> None:
    """Raise ValueError unless there is one distinct hypothesis for each intent label, and none for another label.

    A real check, not an `assert` (which `python -O` removes): without it a zero-shot model would give
    posts labels outside the label set, or never give some labels, without a word.
    """
    problems = []
    if missing := sorted(set(labels) - set(hypotheses)):
        problems.append(f"no hypothesis for {', '.join(missing)}")
    if unknown := sorted(set(hypotheses) - set(labels)):
        problems.append(f"not intent labels: {', '.join(unknown)}")
    if problems:
        raise ValueError(f"INTENT_HYPOTHESES must phrase exactly the intent labels: {'; '.join(problems)}")
    if len(set(hypotheses.values())) != len(hypotheses):
        raise ValueError("INTENT_HYPOTHESES phrases two intent labels the same way; each needs its own hypothesis")


def _result(scores: dict[str, float]) -> dict[str, Any]:
    label = max(scores, key=scores.__getitem__)
    return {"label": label, "score": round(scores[label], 4), "scores": {k: round(v, 4) for k, v in scores.items()}}


class HubSentiment:
    """A sequence-classification model whose labels name negative/neutral/positive (any case or prefix)."""

    def __init__(self, name_or_path: str, max_tokens: int = 128) -> None:
        self._classify = pipeline("text-classification", model=name_or_path, tokenizer=name_or_path, top_k=None,
                                  device=-1)
        self._mapping = self._map_labels(self._classify.model.config.id2label.values())
        self.max_tokens = max_tokens
        self.version = f"hub:{name_or_path}"

    @staticmethod
    def _map_labels(labels: Any) -> dict[str, str]:
        mapping = {}
        for label in labels:
            ours = next((s for s in SENTIMENT_LABELS if s[:3] in str(label).lower()), None)
            if ours is None:
                raise ValueError(f"sentiment model label '{label}' is not negative, neutral or positive")
            mapping[label] = ours
        return mapping

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        outputs = self._classify(list(texts), truncation=True, max_length=self.max_tokens)
        return [_result({self._mapping[o["label"]]: o["score"] for o in scores}) for scores in outputs]


class ZeroShotIntent:
    """Intent by natural-language inference: how strongly the post entails 'This post is <intent>.'"""

    def __init__(self, name_or_path: str) -> None:
        check_hypotheses(INTENT_HYPOTHESES)  # before loading: a mismatch is a programming error, not a model problem
        self._classify = pipeline("zero-shot-classification", model=name_or_path, tokenizer=name_or_path, device=-1)
        self._by_hypothesis = {h: label for label, h in INTENT_HYPOTHESES.items()}
        self.version = f"hub:{name_or_path}"

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        outputs = self._classify(list(texts), candidate_labels=list(INTENT_HYPOTHESES.values()),
                                 hypothesis_template="This post is {}.")
        outputs = [outputs] if isinstance(outputs, dict) else outputs
        return [_result({self._by_hypothesis[h]: s for h, s in zip(o["labels"], o["scores"])}) for o in outputs]

