"""Step: find personal data (field `pii`) and produce `text_redacted`."""
from __future__ import annotations

from typing import Sequence

from models.pii import PiiDetector
from pipeline.steps.base import EnrichmentStep, Post


class DetectPii(EnrichmentStep[PiiDetector]):
    name = "pii"
    label = "DetectPersonalData"

    def load_model(self) -> PiiDetector:
        return PiiDetector(self.settings.pii.phone_regions, self.settings.pii.person_names_model)

    def enrich(self, posts: Sequence[Post], model: PiiDetector) -> list[Post]:
        results = model.detect_many([post["text"] for post in posts])
        return [{**post, "pii": result.as_dict(), "text_redacted": result.text_redacted}
                for post, result in zip(posts, results)]

    def version(self, model: PiiDetector) -> str:
        return model.version
