"""Readers for the labelled data the models learn from and are measured on.

Public benchmarks are read from a folder passed in (`--data`, `TRIAGE_DATA_DIR`), never copied into the
repository. Which split may be used for what is encoded here once: `training_sets` only ever returns
train/val/dev splits; test splits are only reachable through `evaluation_sets`.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from core.labels import INTENT_LABELS, SENTIMENT_LABELS

INTENTS_DIR = Path(__file__).resolve().parent.parent / "data" / "intents"


@dataclass(frozen=True)
class LabelledSet:
    name: str
    task: str  # sentiment | relevance | intent
    texts: list[str]
    labels: list[str]
    metric: str = "macro_f1"  # the benchmark's published metric
    language: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass the folder that holds umsab/, tweeteval/ and germeval2017/")
    return path.read_text(encoding="utf-8").splitlines()


def _numbered(root: Path, folder: str, split: str, name: str, metric: str, language: str) -> LabelledSet:
    texts = _lines(root / folder / f"{split}_text.txt")
    labels = [SENTIMENT_LABELS[int(x)] for x in _lines(root / folder / f"{split}_labels.txt")]
    return LabelledSet(name, "sentiment", texts, labels, metric, language)


def _germeval(root: Path, split: str) -> tuple[LabelledSet, LabelledSet]:
    path = root / "germeval2017" / f"{split}.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [row["text"] for row in rows]
    relevance = ["relevant" if row["relevance"] == "true" else "irrelevant" for row in rows]
    return (LabelledSet(f"germeval2017-{split}-sentiment", "sentiment", texts, [r["sentiment"] for r in rows],
                        "micro_f1", "de"),
            LabelledSet(f"germeval2017-{split}-relevance", "relevance", texts, relevance, "micro_f1", "de"))


def intent_set(split: str, root: Path = INTENTS_DIR) -> LabelledSet:
    """The team's intent set: data/intents/{train,test}.jsonl, one {"text", "label", "language"} per line."""
    rows = [json.loads(line) for line in _lines(Path(root) / f"{split}.jsonl") if line.strip()]
    unknown = {row["label"] for row in rows} - set(INTENT_LABELS)
    if unknown:
        raise ValueError(f"data/intents/{split}.jsonl has unknown labels: {sorted(unknown)}")
    return LabelledSet(f"intents-{split}", "intent", [r["text"] for r in rows], [r["label"] for r in rows])


def training_sets(root: str | Path) -> list[LabelledSet]:
    """Everything the sentiment and relevance heads may learn from: train, val and GermEval dev only."""
    root = Path(root)
    return [
        _numbered(root, "umsab/german", "train", "umsab-de-train", "macro_f1", "de"),
        _numbered(root, "umsab/english", "train", "umsab-en-train", "macro_f1", "en"),
        _numbered(root, "tweeteval/sentiment", "val", "tweeteval-val", "macro_recall", "en"),
        *_germeval(root, "dev"),
    ]


def validation_sets(root: str | Path) -> list[LabelledSet]:
    """Held out from training, used to watch training and pick the checkpoint (never a test split)."""
    root = Path(root)
    return [_numbered(root, "umsab/german", "val", "umsab-de-val", "macro_f1", "de"),
            _numbered(root, "umsab/english", "val", "umsab-en-val", "macro_f1", "en")]


def evaluation_sets(root: str | Path) -> list[LabelledSet]:
    """The published test splits, for reporting only."""
    root = Path(root)
    germeval_sentiment, germeval_relevance = _germeval(root, "test_syn")
    return [
        _numbered(root, "umsab/german", "test", "umsab-de-test", "macro_f1", "de"),
        _numbered(root, "umsab/english", "test", "umsab-en-test", "macro_f1", "en"),
        _numbered(root, "tweeteval/sentiment", "test", "tweeteval-test", "macro_recall", "en"),
        germeval_sentiment,
        germeval_relevance,
    ]
