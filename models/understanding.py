"""Sentiment, intent, relevance and topic from one encoder pass per post.

The trained parts are small files in models/artifacts/ (adapters merged into the encoder at load,
one linear head per task, labels and provenance in model.json); the encoder itself is built or
downloaded once and cached outside the repository.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

from models.encoder import TextEncoder, resolve_encoder
from models.lora import merge_adapters
from models.topics import TopicMatcher

log = logging.getLogger(__name__)
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@dataclass
class Head:
    labels: list[str]
    linear: torch.nn.Linear
    temperature: float = 1.0  # fitted on validation data (models/calibration.py): scores read as probabilities
    review_below: Optional[float] = None  # a top score under this marks the post needs_review

    def classify(self, vectors: torch.Tensor) -> list[dict[str, Any]]:
        probs = torch.softmax(self.linear(vectors) / self.temperature, dim=-1)
        results = []
        for row in probs.tolist():
            ranked = sorted(range(len(row)), key=row.__getitem__, reverse=True)
            result = {"label": self.labels[ranked[0]], "score": round(row[ranked[0]], 4),
                      "scores": {label: round(p, 4) for label, p in zip(self.labels, row)}}
            if self.review_below is not None and row[ranked[0]] < self.review_below:
                result["review"] = [self.labels[ranked[0]], self.labels[ranked[1]]]
            results.append(result)
        return results


REVIEWED_TASKS = ("intent", "sentiment")  # the calibrated heads whose doubt marks a post needs_review


def review_fields(result: dict[str, Any]) -> dict[str, Any]:
    """`needs_review` for one analyzed post, and for each doubtful task its two best labels (`review_labels`),
    popped from the task results so that the post carries them once."""
    doubtful = {task: result[task].pop("review") for task in REVIEWED_TASKS
                if isinstance(result.get(task), dict) and "review" in result[task]}
    return {"needs_review": bool(doubtful), **({"review_labels": doubtful} if doubtful else {})}


def save_artifacts(out: Path, spec: dict[str, Any], adapters: dict[str, torch.Tensor], heads: dict[str, Head]) -> None:
    """Write model.json, adapters.safetensors (fp16) and heads.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in adapters.items()}, str(out / "adapters.safetensors"))
    tensors = {}
    for task, head in heads.items():
        tensors[f"{task}.weight"] = head.linear.weight.detach().contiguous()
        tensors[f"{task}.bias"] = head.linear.bias.detach().contiguous()
    save_file(tensors, str(out / "heads.safetensors"))
    spec = {**spec, "heads": {task: head.labels for task, head in heads.items()}}
    (out / "model.json").write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n")


def load_heads(artifacts: Path, spec: dict[str, Any]) -> dict[str, Head]:
    """The heads, with the temperature and review threshold of `spec["calibration"]` where training fitted them."""
    tensors = load_file(str(artifacts / "heads.safetensors"))
    calibration = spec.get("calibration", {})
    heads = {}
    for task, labels in spec["heads"].items():
        weight = tensors[f"{task}.weight"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": tensors[f"{task}.bias"]})
        fitted = calibration.get(task, {})
        heads[task] = Head(labels, linear.eval(), fitted.get("temperature", 1.0), fitted.get("review_below"))
    return heads


TOPIC_EXAMPLES = "topic-examples.safetensors"  # vectors of posts agents gave a topic (stage 2 of training)


def corrected_topics(artifacts: Path, spec: dict[str, Any]) -> Optional[tuple[list[str], torch.Tensor]]:
    """Agents' topic corrections as (topics, similarity vectors): kept as vectors, never as text, because the
    artifacts are committed and the posts are customers'."""
    topics = spec.get("topic_examples")
    if not topics or not (artifacts / TOPIC_EXAMPLES).exists():
        return None
    return topics, load_file(str(artifacts / TOPIC_EXAMPLES))["vectors"]


def _encoder_choice(artifacts: Path, spec: dict[str, Any], encoder: Optional[str]) -> tuple[str, bool]:
    """The encoder to load, and whether the trained adapters merge into it (they fit only the one they were
    trained on, so a configured models.encoder runs without them)."""
    return encoder or spec["encoder"], (artifacts / "adapters.safetensors").exists() and encoder is None


def export_key(artifacts: Path = ARTIFACTS_DIR, encoder: Optional[str] = None) -> str:
    """The ONNX cache key these artifacts load with: `triage prune-cache` keeps only its files."""
    from models import onnx_runtime
    spec = json.loads((artifacts / "model.json").read_text(encoding="utf-8"))
    encoder_name, merged = _encoder_choice(artifacts, spec, encoder)
    return onnx_runtime.export_key(encoder_name, artifacts, merged)


def _warn_of_stale_exports(stale: list[Path]) -> None:
    if stale:
        log.warning("the model cache holds exports of other model versions", extra={"fields": {
            "files": len(stale), "mb": round(sum(path.stat().st_size for path in stale) / 2**20),
            "remove_with": "triage prune-cache"}})


class TextUnderstanding:
    """Analyzes batches of post texts: every head and the topic matcher read one shared vector."""

    def __init__(self, encoder: TextEncoder, heads: dict[str, Head], topics: Optional[TopicMatcher],
                 version: str, task_models: Optional[dict[str, Any]] = None,
                 calibration: Optional[dict[str, Any]] = None) -> None:
        self.encoder, self.heads, self.topics = encoder, heads, topics
        self.calibration = calibration or {}  # model.json's: how each head was calibrated, with ECE before/after
        self.task_models = task_models or {}  # hub models that replace a head (models/hub_models.py)
        self.version = version + "".join(f"+{task}={m.version}" for task, m in self.task_models.items())

    @classmethod
    def load(cls, artifacts: Path = ARTIFACTS_DIR, cache_dir: str = "~/.cache/triage/models",
             encoder: Optional[str] = None, threads: int = 2, int8: bool = False, runtime: str = "torch",
             topics_file: Optional[str] = None, sentiment_model: Optional[str] = None,
             intent_model: Optional[str] = None) -> "TextUnderstanding":
        """Load the encoder (built offline by default), merge the adapters, load the heads.

        runtime 'onnxruntime' runs the merged encoder as a cached ONNX export (models/onnx_runtime.py).
        """
        torch.set_num_threads(threads)
        spec = json.loads((artifacts / "model.json").read_text(encoding="utf-8"))
        if runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"unknown models.runtime {runtime!r}: use torch or onnxruntime")
        if int8 and runtime != "onnxruntime":
            raise ValueError("int8 runs on ONNX Runtime only: pass runtime='onnxruntime'")
        encoder_name, merged = _encoder_choice(artifacts, spec, encoder)
        adapters = artifacts / "adapters.safetensors"
        exported = None
        if runtime == "onnxruntime":
            from models import onnx_runtime
            key = onnx_runtime.export_key(encoder_name, artifacts, merged)
            _warn_of_stale_exports(onnx_runtime.stale_exports(cache_dir, key))
            exported = onnx_runtime.cached_model(cache_dir, key, int8)
        text_encoder = TextEncoder(resolve_encoder(encoder_name, cache_dir), spec["max_tokens"], spec["prefix"],
                                   load_weights=exported is None, pooling=spec.get("pooling", "mean")).eval()
        if merged and exported is None:
            state = {k: v.float() for k, v in load_file(str(adapters)).items()}
            merge_adapters(text_encoder.model, state, spec["adapter"]["alpha"] / spec["adapter"]["rank"])
        if runtime == "onnxruntime":
            path = exported or onnx_runtime.export_model(text_encoder, cache_dir, key, int8, artifacts)
            text_encoder.use_onnxruntime(onnx_runtime.session(path, threads))
        topics = TopicMatcher.from_file(topics_file, text_encoder, corrected_topics(artifacts, spec)) \
            if topics_file else None
        version = spec["version"] + ("+int8" if int8 else "") + ("+ort" if runtime == "onnxruntime" else "")
        task_models: dict[str, Any] = {}
        if sentiment_model or intent_model:
            from models.hub_models import HubSentiment, ZeroShotIntent
            if sentiment_model:
                task_models["sentiment"] = HubSentiment(sentiment_model)
            if intent_model:
                task_models["intent"] = ZeroShotIntent(intent_model)
        return cls(text_encoder, load_heads(artifacts, spec), topics, version, task_models, spec.get("calibration"))

    @torch.inference_mode()
    def analyze(self, texts: Sequence[str], batch_size: int = 32) -> list[dict[str, Any]]:
        """One dict per text: {task: {label, score, scores}} for every head, plus 'topic' when configured, and
        when the heads are calibrated `needs_review` (with `review_labels` for the doubtful tasks)."""
        vectors = self.encoder.embed(texts, batch_size)
        per_task = {task: head.classify(vectors) for task, head in self.heads.items() if task not in self.task_models}
        per_task.update({task: model.classify(texts) for task, model in self.task_models.items()})
        results = [{task: per_task[task][i] for task in per_task} for i in range(len(texts))]
        if any(head.review_below is not None for task, head in self.heads.items() if task in REVIEWED_TASKS):
            results = [{**result, **review_fields(result)} for result in results]
        if self.topics:
            for result, topic in zip(results, self.topics.assign(self.encoder.similarity_part(vectors))):
                result["topic"] = topic
        return results
