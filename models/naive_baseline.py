"""The common way, for comparison: one transformers `pipeline` per task, each with its own model.

Built from our own encoder and heads (same architecture and size, one BertForSequenceClassification
per task), so the benchmark compares the serving strategy, not different models. Predictions differ
from ours (these models read the pooled first token only, not the first token and the mean of all
tokens): this is a speed baseline only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch
from transformers import BertConfig, BertForSequenceClassification, pipeline

from models.understanding import TextUnderstanding


def build_task_models(understanding: TextUnderstanding, out: Path) -> dict[str, Path]:
    """One HF classification folder per head: the adapted encoder weights plus that head (rewritten every run,
    so a retrained model is never compared with a stale copy)."""
    folders = {}
    encoder_state = understanding.encoder.model.state_dict()
    for task, head in understanding.heads.items():
        folder = out / task
        config = BertConfig(**{**understanding.encoder.model.config.to_dict(), "num_labels": len(head.labels),
                               "id2label": dict(enumerate(head.labels)),
                               "label2id": {label: i for i, label in enumerate(head.labels)}})
        model = BertForSequenceClassification(config)
        model.bert.load_state_dict(encoder_state, strict=False)
        hidden = config.hidden_size  # the heads also read the mean-pooled half: this baseline keeps the first
        model.classifier.load_state_dict({"weight": head.linear.weight[:, :hidden], "bias": head.linear.bias})
        model.save_pretrained(folder)
        understanding.encoder.tokenizer.save_pretrained(folder)
        folders[task] = folder
    return folders


def run(folders: dict[str, Path], texts: Sequence[str], threads: int) -> dict[str, float]:
    """Load each task's pipeline and classify every text with each of them; returns timings."""
    torch.set_num_threads(threads)
    started = time.monotonic()
    classifiers = {task: pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
                   for task, folder in folders.items()}
    loaded = time.monotonic()
    for classifier in classifiers.values():
        classifier(list(texts), truncation=True, max_length=128)
    done = time.monotonic()
    return {"load_s": loaded - started, "run_s": done - loaded, "posts": len(texts),
            "posts_per_s": len(texts) / (done - loaded), "tasks": len(classifiers)}


if __name__ == "__main__":  # used by `triage bench` in a separate process, for a clean RSS figure
    import sys
    spec = json.loads(sys.argv[1])
    texts = [json.loads(line)["text"] for line in open(spec["input"], encoding="utf-8")][: spec["limit"]]
    print(json.dumps(run({k: Path(v) for k, v in spec["folders"].items()}, texts, spec["threads"])))
