"""Step: sentiment, intent, relevance and topic from one encoder pass (fields of the same names)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from models.understanding import ARTIFACTS_DIR, TextUnderstanding
from pipeline.steps.base import EnrichmentStep, Post


class Understand(EnrichmentStep[TextUnderstanding]):
    name = "understanding"
    label = "ClassifySentimentIntentTopic"

    def load_model(self) -> TextUnderstanding:
        cfg = self.settings.models
        return TextUnderstanding.load(Path(cfg.artifacts) if cfg.artifacts else ARTIFACTS_DIR, cfg.cache_dir,
                                      encoder=cfg.encoder, threads=cfg.threads, int8=cfg.int8,
                                      topics_file=cfg.topics_file, sentiment_model=cfg.sentiment_model,
                                      intent_model=cfg.intent_model)

    def enrich(self, posts: Sequence[Post], model: TextUnderstanding) -> list[Post]:
        results = model.analyze([post["text"] for post in posts], self.settings.models.batch_size)
        return [{**post, **result} for post, result in zip(posts, results)]

    def version(self, model: TextUnderstanding) -> str:
        return model.version
