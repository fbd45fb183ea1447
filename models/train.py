"""`triage train --data ../shared/data` (`make train`): train the adapters and heads committed under models/artifacts/.

The hyperparameters live in models/train.yaml (validated like every config file; `--config FILE` reads
another, and a few options override single values).

Stage 1 (encoder): LoRA adapters on every linear layer of the encoder plus the sentiment, relevance
and intent heads, multi-task, on the benchmarks' train/val/dev splits and the team's intent train
split only. The heads read the first token's state and the mean-pooled state; a second loss keeps
the mean-pooled half close to the base model's sentence embedding, so that topic matching by
similarity keeps working (models/encoder.py). The epoch is chosen on the UMSAB validation splits, a
tenth of the intent train split held back and the topic dev sets, none of which is trained on.
About 12 minutes an epoch on 2 CPU cores.
Stage 2 (intent): a linear intent head on the adapted encoder's vectors of data/intents/train.jsonl,
in seconds, so intents can be retrained whenever agents correct labels.
"""
from __future__ import annotations

import json
import os
import logging
import random
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file

from core.labels import INTENT_LABELS, RELEVANCE_LABELS, SENTIMENT_LABELS
from core.yaml_config import ConfigFileError, read_yaml, validate
from models import datasets, evaluate, metrics
from models.encoder import TextEncoder, resolve_encoder
from models.encoder_build import RESULT_SHA256
from models.lora import add_adapters, adapter_state
from models.onnx_runtime import save_calibration_texts
from models.understanding import ARTIFACTS_DIR, Head, load_heads, save_artifacts

log = logging.getLogger("triage.train")
ENCODER = "builtin:multilingual-e5-small"  # the encoder the artifacts fit (pinned by SHA-256 in encoder_build)
POOLING = "first+mean"  # the heads read the first token's and the mean-pooled state; topics the mean-pooled half
TASK_LABELS = {"sentiment": SENTIMENT_LABELS, "relevance": RELEVANCE_LABELS,
               "intent": INTENT_LABELS}
CONFIG_FILE = Path(__file__).resolve().parent / "train.yaml"


# ---- the training config (models/train.yaml) ---------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdapterConfig(_Strict):
    rank: int = Field(ge=1, le=256)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    targets: list[str] = Field(min_length=1)


class IntentHeadConfig(_Strict):
    seed: int
    folds: int = Field(ge=2)
    weight_decays: list[float] = Field(min_length=1)
    standardize: list[bool] = Field(min_length=1)
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    label_smoothing: float = Field(ge=0, lt=1)


class TrainConfig(_Strict):
    """Every hyperparameter of both stages; models/train.yaml documents each."""
    epochs: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1, le=4096)
    max_tokens: int = Field(ge=8, le=512)
    lr: float = Field(gt=0, le=1)
    head_lr_factor: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_share: float = Field(gt=0, le=1)
    clip_grad_norm: float = Field(gt=0)
    head_dropout: float = Field(ge=0, lt=1)
    seed: int
    threads: int = Field(ge=1, le=256)
    adapter: AdapterConfig
    geometry_weight: float = Field(ge=0)
    oversampling: dict[str, int]
    intent_holdout_every: int = Field(ge=2)
    intent_head: IntentHeadConfig

    @model_validator(mode="after")
    def _copies_at_least_one(self) -> "TrainConfig":
        bad = [name for name, copies in self.oversampling.items() if copies < 1]
        if bad:
            raise ValueError(f"oversampling: copies must be at least 1 ({', '.join(bad)})")
        return self


class TrainConfigError(ConfigFileError):
    what = "training config"


# command-line option -> key it overrides
OVERRIDES = {"epochs": "--epochs", "batch_size": "--batch-size", "max_tokens": "--max-tokens", "lr": "--lr",
             "seed": "--seed", "threads": "--threads"}


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """models/train.yaml (or `path`), with single values overridden (key -> value, None: not given)."""
    document = read_yaml(path or CONFIG_FILE, TrainConfigError, "training config", empty={})
    if not isinstance(document.data, dict):
        raise TrainConfigError([f"{document.where(())}: must hold a mapping at the top level"])
    data, locations = dict(document.data), document.locations()
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
            locations[(key,)] = f"command line {OVERRIDES.get(key, key)}"
    return validate(TrainConfig, data, locations, TrainConfigError)


def _intent_split(intents_dir: Path, every: int) -> tuple[datasets.LabelledSet, datasets.LabelledSet]:
    """The intent train split, minus every `every`th text kept back to choose the epoch (the test split is unseen)."""
    train = datasets.intent_set("train", intents_dir)
    keep = [i for i in range(len(train.texts)) if i % every]
    held = [i for i in range(len(train.texts)) if not i % every]
    pick = lambda idx, name: datasets.LabelledSet(name, "intent", [train.texts[i] for i in idx],  # noqa: E731
                                                  [train.labels[i] for i in idx])
    return pick(keep, "intents-train-fit"), pick(held, "intents-train-holdout")


def _examples(data_dir: str, intents_dir: Path, config: TrainConfig) -> list[tuple[str, dict[str, str]]]:
    """(text, {task: label}) pairs; GermEval texts carry both a sentiment and a relevance label."""
    merged: dict[str, dict[str, str]] = defaultdict(dict)
    copies: dict[str, int] = defaultdict(lambda: 1)
    order: list[str] = []
    for labelled in datasets.training_sets(data_dir):
        for text, label in zip(labelled.texts, labelled.labels):
            key = f"{labelled.name.split('-')[0]}\x00{text}"
            if key not in merged:
                order.append(key)
            merged[key][labelled.task] = label
            copies[key] = max(copies[key], config.oversampling.get(labelled.name, 1))
    examples = [(key.split("\x00", 1)[1], merged[key]) for key in order for _ in range(copies[key])]
    intent_fit, _ = _intent_split(intents_dir, config.intent_holdout_every)
    examples += [(text, {"intent": label})
                 for text, label in zip(intent_fit.texts, intent_fit.labels)] * config.oversampling.get("intents", 1)
    return examples


def _batches(examples: list, batch_size: int, rng: random.Random) -> list[list]:
    """Shuffled batches of similar length (little padding), in shuffled order."""
    shuffled = examples[:]
    rng.shuffle(shuffled)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(shuffled), chunk):
        part = sorted(shuffled[start:start + chunk], key=lambda ex: len(ex[0]))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def _validate(encoder: TextEncoder, heads: dict[str, Head], data_dir: str, intents_dir: Path,
              holdout_every: int) -> dict[str, float]:
    """Macro-F1 on the UMSAB val splits (sentiment) and the held-back intent texts, and how often the nearest
    example phrase of the shipped topic configs is right on the topic dev sets; none is trained on.

    Topics are measured without the configs' thresholds: those are chosen per company for a trained
    model, so at a fixed threshold an epoch would be judged partly by how well it fits an old setting."""
    encoder.eval()
    scores = {}
    for labelled in [*datasets.validation_sets(data_dir), _intent_split(intents_dir, holdout_every)[1]]:
        head = heads[labelled.task]
        predicted = [r["label"] for r in head.classify(encoder.embed(labelled.texts))]
        scores[labelled.name] = round(metrics.macro_f1(labelled.labels, predicted, head.labels), 4)
    scores.update({f"topics-{company}-dev-nearest": round(evaluate.nearest_topic_accuracy(encoder, company), 4)
                   for company in evaluate.TOPIC_CONFIGS})
    encoder.train()
    return scores


def train_encoder(data_dir: str, intents_dir: Path, cache_dir: str, out: Path, config: TrainConfig) -> list[dict]:
    """Stage 1; returns the validation history (one entry per epoch, with the epoch's mean training loss)."""
    epochs, batch_size, lr, adapter = config.epochs, config.batch_size, config.lr, config.adapter
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder = TextEncoder(resolve_encoder(ENCODER, cache_dir), max_tokens=config.max_tokens, pooling=POOLING)
    examples = _examples(data_dir, intents_dir, config)
    texts = list(dict.fromkeys(text for text, _ in examples))
    log.info("embedding the training texts with the base encoder", extra={"fields": {"texts": len(texts)}})
    anchors = dict(zip(texts, encoder.similarity_part(encoder.embed(texts))))
    add_adapters(encoder.model, adapter.targets, adapter.rank, adapter.alpha, adapter.dropout)
    heads = {task: Head(labels, torch.nn.Linear(encoder.dim, len(labels))) for task, labels in TASK_LABELS.items()}
    dropout = torch.nn.Dropout(config.head_dropout)
    adapter_params = [p for p in encoder.parameters() if p.requires_grad]
    head_params = [p for h in heads.values() for p in h.linear.parameters()]
    optimizer = torch.optim.AdamW([{"params": adapter_params, "lr": lr},
                                   {"params": head_params, "lr": lr * config.head_lr_factor}],
                                  weight_decay=config.weight_decay)
    steps = epochs * -(-len(examples) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (config.warmup_share * steps)) * max(0.0, (steps - s) / steps))
    label_index = {task: {label: i for i, label in enumerate(labels)} for task, labels in TASK_LABELS.items()}
    log.info("training", extra={"fields": {"examples": len(examples), "steps": steps,
                                           "trainable": sum(p.numel() for p in adapter_params + head_params)}})
    best: dict[str, Any] = {"score": -1.0}
    history = []
    encoder.train()
    started, step = time.monotonic(), 0
    for epoch in range(1, epochs + 1):
        losses = []
        for batch in _batches(examples, batch_size, rng):
            tokens = encoder.tokenize([text for text, _ in batch])
            pooled = encoder(tokens["input_ids"], tokens["attention_mask"])
            vectors = dropout(pooled)
            anchor = torch.stack([anchors[text] for text, _ in batch])
            drift = 1 - torch.nn.functional.cosine_similarity(encoder.similarity_part(pooled), anchor)
            loss = config.geometry_weight * drift.mean()
            for task, head in heads.items():
                rows = [i for i, (_, labels) in enumerate(batch) if task in labels]
                if rows:
                    gold = torch.tensor([label_index[task][batch[i][1][task]] for i in rows])
                    loss = loss + torch.nn.functional.cross_entropy(head.linear(vectors[rows]), gold)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter_params + head_params, config.clip_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                elapsed = time.monotonic() - started
                log.info("progress", extra={"fields": {"epoch": epoch, "step": step, "of": steps,
                                                       "loss": round(loss.item(), 4),
                                                       "similarity_drift": round(drift.mean().item(), 4),
                                                       "texts_per_s": round(step * batch_size / elapsed, 1),
                                                       "eta_min": round(elapsed / step * (steps - step) / 60, 1)}})
        validation = _validate(encoder, heads, data_dir, intents_dir, config.intent_holdout_every)
        score = sum(validation.values()) / len(validation)
        train_loss = round(sum(losses) / len(losses), 4)
        history.append({"epoch": epoch, **validation, "train_loss": train_loss})
        log.info("validation", extra={"fields": {"epoch": epoch, **validation, "train_loss": train_loss}})
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "adapters": adapter_state(encoder.model),
                    "heads": {t: Head(h.labels, _copy_linear(h.linear)) for t, h in heads.items()}}
            save_artifacts(out, _spec(encoder, data_dir, examples, config, best["epoch"], started, history),
                           best["adapters"], best["heads"])
    # Once more with the whole history: the save above happens only on a better epoch, so epochs after the best
    # one were missing from model.json.
    save_artifacts(out, _spec(encoder, data_dir, examples, config, best["epoch"], started, history),
                   best["adapters"], best["heads"])
    return history


def _spec(encoder: TextEncoder, data_dir: str, examples: list, config: TrainConfig, chosen_epoch: int,
          started: float, history: list) -> dict[str, Any]:
    """model.json: what was trained on what, how, and how it scored on validation (saved after each better epoch)."""
    oversampling, every = config.oversampling, config.intent_holdout_every
    adapter = config.adapter.model_dump()
    if float(adapter["alpha"]).is_integer():
        adapter["alpha"] = int(adapter["alpha"])  # 32, as model.json always said
    return {
        "version": f"mE5s-lora{adapter['rank']}-{datetime.now(timezone.utc):%Y%m%dT%H%M}",  # unique per run
        "encoder": ENCODER, "encoder_sha256": RESULT_SHA256, "max_tokens": 128, "prefix": encoder.prefix,
        "pooling": encoder.pooling,
        "adapter": {k: adapter[k] for k in ("rank", "alpha", "targets")},
        "training": {"data": [s.name + (f" (x{oversampling[s.name]})" if s.name in oversampling else "")
                              for s in datasets.training_sets(data_dir)] + [
                         f"data/intents/train.jsonl ({every - 1} of every {every} texts, "
                         f"x{oversampling.get('intents', 1)})"],
                     "examples": len(examples),
                     "geometry_weight": config.geometry_weight, "epochs": config.epochs, "chosen_epoch": chosen_epoch,
                     "batch_size": config.batch_size,
                     "train_max_tokens": config.max_tokens, "lr": config.lr, "seed": config.seed,
                     "minutes": round((time.monotonic() - started) / 60, 1), "validation": history},
    }


def _copy_linear(linear: torch.nn.Linear) -> torch.nn.Linear:
    copy = torch.nn.Linear(linear.in_features, linear.out_features)
    copy.load_state_dict({k: v.detach().clone() for k, v in linear.state_dict().items()})
    return copy


def _fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float, standardize: bool,
                head: IntentHeadConfig) -> torch.nn.Linear:
    """A softmax-regression head; standardisation is folded into its weights so serving stays one Linear."""
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp(min=1e-6) if standardize else torch.ones(x.shape[1])
    linear = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=head.lr, weight_decay=weight_decay)
    z = (x - mean) / std
    for _ in range(head.epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear(z), y, label_smoothing=head.label_smoothing).backward()
        optimizer.step()
    folded = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        folded.weight.copy_(linear.weight / std)
        folded.bias.copy_(linear.bias - (linear.weight / std) @ mean)
    return folded


def _cross_validate(x: torch.Tensor, y: torch.Tensor, labels: list[str],
                    config: IntentHeadConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick the head's settings by k-fold cross-validation on the train split (the test split stays unseen)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.seed))
    folds = config.folds
    results = []
    for standardize in config.standardize:
        for weight_decay in config.weight_decays:
            scores = []
            for fold in range(folds):
                held = order[fold::folds]
                keep = torch.ones(len(y), dtype=torch.bool)
                keep[held] = False
                head = _fit_linear(x[keep], y[keep], len(labels), weight_decay, standardize, config)
                predicted = [labels[i] for i in head(x[held]).argmax(1).tolist()]
                scores.append(metrics.macro_f1([labels[i] for i in y[held].tolist()], predicted, labels))
            results.append({"standardize": standardize, "weight_decay": weight_decay,
                            "cv_macro_f1": round(sum(scores) / folds, 4)})
    return max(results, key=lambda r: r["cv_macro_f1"]), results


def train_intent(cache_dir: str, artifacts: Path, intents_dir: Path,
                 config: Optional[IntentHeadConfig] = None) -> dict[str, Any]:
    """Fit the linear intent head on frozen, adapted encoder vectors of the team's intent train split."""
    from models.understanding import TextUnderstanding
    config = config or load_config().intent_head
    torch.manual_seed(config.seed)
    understanding = TextUnderstanding.load(artifacts, cache_dir)
    train = datasets.intent_set("train", intents_dir)
    vectors = understanding.encoder.embed(train.texts)
    labels = list(INTENT_LABELS)
    gold = torch.tensor([labels.index(label) for label in train.labels])
    best, grid = _cross_validate(vectors, gold, labels, config)
    log.info("intent head cross-validation", extra={"fields": {"best": best}})
    spec = json.loads((artifacts / "model.json").read_text(encoding="utf-8"))
    heads = {task: head for task, head in load_heads(artifacts, spec).items() if task != "intent"}
    heads["intent"] = Head(labels, _fit_linear(vectors, gold, len(labels), best["weight_decay"], best["standardize"],
                                               config))
    spec["training"]["intent"] = {"data": "data/intents/train.jsonl", "examples": len(train.texts),
                                  "chosen_by": f"{config.folds}-fold cross-validation on the train split",
                                  "chosen": best,
                                  "grid": grid}
    save_artifacts(artifacts, spec, load_file(str(artifacts / "adapters.safetensors")), heads)
    save_calibration_texts(artifacts, train.texts)
    return best


def run(data_dir: str, cache_dir: str, config_file: str | os.PathLike[str] | None = None,
        overrides: Optional[dict[str, Any]] = None, stage: str = "all", out: str | Path | None = None,
        intents_dir: str | Path | None = None) -> int:
    """`triage train`: stage 1 (encoder) and/or stage 2 (intent head) with the hyperparameters of `config_file`
    (default models/train.yaml) and `overrides` (keys of OVERRIDES; None: not given). A bad config raises
    TrainConfigError (a ValueError) whose lines read FILE:LINE: key: problem, before any work is done."""
    if stage not in ("all", "encoder", "intent"):
        raise ValueError(f"unknown stage {stage!r}: all, encoder or intent")
    config = load_config(config_file, overrides)
    torch.set_num_threads(config.threads)
    artifacts = Path(out) if out else ARTIFACTS_DIR
    intents = Path(intents_dir) if intents_dir else datasets.INTENTS_DIR
    log.info("training config", extra={"fields": {"config": str(config_file or CONFIG_FILE),
                                                  **config.model_dump(exclude={"adapter", "intent_head"})}})
    if stage in ("all", "encoder"):
        train_encoder(data_dir, intents, cache_dir, artifacts, config)
    if stage in ("all", "intent"):
        print(json.dumps(train_intent(cache_dir, artifacts, intents, config.intent_head)))
    return 0


if __name__ == "__main__":
    print("models.train: training is a command now: triage train --data DIR (see triage train --help)", file=sys.stderr)
    raise SystemExit(2)
