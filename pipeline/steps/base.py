"""The one interface every enrichment step implements, in the spirit of Beam's ModelHandler.

A step loads its model once per worker (`load_model`), enriches a batch of posts (`enrich`) and
declares which batch sizes suit it. Beam's RunInference provides the rest: batching, sharing the
loaded model, per-step metrics (namespace `triage.<name>`), and catching failed batches so they
become dead letters instead of stopping the job.
"""
from __future__ import annotations

from typing import Any, Generic, Iterable, Mapping, Optional, Sequence, TypeVar

from apache_beam.ml.inference.base import ModelHandler

from pipeline import observability
from core.config import Settings

Post = dict[str, Any]
ModelT = TypeVar("ModelT")


class EnrichmentStep(ModelHandler[Post, Post, ModelT], Generic[ModelT]):
    """Base class: subclasses set `name` and implement `load_model` and `enrich`."""

    name: str = "step"  # the key in model_versions and the metrics namespace
    label: str = "Enrich"  # the Beam step name, e.g. 'DetectLanguage'
    requires: tuple[str, ...] = ("text",)  # post fields that must be there before this step (registry checks)
    provides: tuple[str, ...] = ()  # post fields this step adds

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def enrich(self, posts: Sequence[Post], model: ModelT) -> list[Post]:
        """Return new post dicts with this step's fields added (inputs must not be mutated)."""
        raise NotImplementedError

    def version(self, model: ModelT) -> str:
        """Recorded in each post's model_versions under this step's name."""
        raise NotImplementedError

    def run_inference(self, batch: Sequence[Post], model: ModelT,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[Post]:
        enriched = self.enrich(batch, model)
        observability.STEP_POSTS.labels(self.name).inc(len(enriched))
        observability.STEP_BATCH_SIZE.labels(self.name).observe(len(batch))
        version = self.version(model)
        for post in enriched:
            post["model_versions"] = {**post.get("model_versions", {}), self.name: version}
        return enriched

    def get_num_bytes(self, batch: Sequence[Post]) -> int:
        return sum(len(post["text"]) for post in batch)

    def get_metrics_namespace(self) -> str:
        return f"triage.{self.name}"

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": self.settings.enrichment.min_batch_size,
                "max_batch_size": self.settings.enrichment.max_batch_size}
