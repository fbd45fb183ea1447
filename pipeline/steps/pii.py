"""Step: find personal data (field `pii`) and produce `text_redacted` (and `title_redacted`).

Titles are redacted too: forum and blog titles carry contract numbers as often as bodies do, and
analysts only ever see the redacted forms.
"""
from __future__ import annotations

from typing import Sequence

from models.pii import PiiDetector
from pipeline.steps.base import EnrichmentStep, Post


class DetectPii(EnrichmentStep[PiiDetector]):
    name = "pii"
    label = "DetectPersonalData"
    provides = ("pii", "text_redacted", "title_redacted")

    def load_model(self) -> PiiDetector:
        return PiiDetector(self.settings.pii.phone_regions, self.settings.pii.person_names_model)

    def enrich(self, posts: Sequence[Post], model: PiiDetector) -> list[Post]:
        results = model.detect_many([post["text"] for post in posts])
        titled = [i for i, post in enumerate(posts) if post.get("title")]
        titles = dict(zip(titled, model.detect_many([posts[i]["title"] for i in titled])))
        enriched = []
        for i, (post, result) in enumerate(zip(posts, results)):
            title = titles.get(i)
            pii = result.as_dict()
            if title is not None and title.spans:
                pii["found"] = True
                pii["types"] = sorted(set(pii["types"]) | {span.type for span in title.spans})
            enriched.append({**post, "pii": pii, "text_redacted": result.text_redacted,
                             "title_redacted": title.text_redacted if title is not None else None})
        return enriched

    def version(self, model: PiiDetector) -> str:
        return model.version
