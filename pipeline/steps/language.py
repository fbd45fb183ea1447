"""Step: detect each post's language (field `language: {code, score}`)."""
from __future__ import annotations

from typing import Sequence

from models.language import LanguageDetector
from pipeline.steps.base import EnrichmentStep, Post


class DetectLanguage(EnrichmentStep[LanguageDetector]):
    name = "language"
    label = "DetectLanguage"
    provides = ("language",)

    def load_model(self) -> LanguageDetector:
        cfg = self.settings.enrichment
        return LanguageDetector(cfg.languages, cfg.language_min_score, cfg.language_min_letters, cfg.language_min_words)

    def enrich(self, posts: Sequence[Post], model: LanguageDetector) -> list[Post]:
        return [{**post, "language": model.detect(post["text"]).as_dict()} for post in posts]

    def version(self, model: LanguageDetector) -> str:
        return model.version
