"""Step: sentiment, intent, relevance and topic from one encoder pass (fields of the same names)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from models.understanding import ARTIFACTS_DIR, TextUnderstanding
from core.config import ModelSettings
from pipeline.steps.base import EnrichmentStep, Post


def load_understanding(cfg: ModelSettings, int8: bool | None = None) -> TextUnderstanding:
    """The models as configured (`int8` overrides models.int8, e.g. for `triage eval --precision`).

    int8 always runs on ONNX Runtime, so an override to int8 also picks that runtime.
    """
    int8 = cfg.int8 if int8 is None else int8
    return TextUnderstanding.load(Path(cfg.artifacts) if cfg.artifacts else ARTIFACTS_DIR, cfg.cache_dir,
                                  encoder=cfg.encoder, threads=cfg.threads, int8=int8,
                                  runtime="onnxruntime" if int8 else cfg.runtime, topics_file=cfg.topics_file,
                                  sentiment_model=cfg.sentiment_model, intent_model=cfg.intent_model)


class Understand(EnrichmentStep[TextUnderstanding]):
    name = "understanding"
    label = "ClassifySentimentIntentTopic"
    provides = ("sentiment", "intent", "relevance", "topic")

    def load_model(self) -> TextUnderstanding:
        return load_understanding(self.settings.models)

    def enrich(self, posts: Sequence[Post], model: TextUnderstanding) -> list[Post]:
        results = model.analyze([post["text"] for post in posts], self.settings.models.batch_size)
        return [{**post, **result} for post, result in zip(posts, results)]

    def version(self, model: TextUnderstanding) -> str:
        return model.version
