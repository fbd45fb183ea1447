"""Readers for the labelled data the models learn from and are measured on.

Public benchmarks are read from a folder passed in (`--data`, `TRIAGE_DATA_DIR`), never copied into the
repository. Which split may be used for what is encoded here once: `training_sets` only ever returns
train/val/dev splits; test splits are only reachable through `evaluation_sets`.
"""
from __future__ import annotations

import csv
import html
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from core.labels import INTENT_LABELS, SENTIMENT_LABELS

log = logging.getLogger(__name__)

INTENTS_DIR = Path(__file__).resolve().parent.parent / "data" / "intents"
# UMSAB's languages beyond German and English (XLM-T's multilingual setting): train/val for training and the
# epoch choice, test for reporting beside XLM-T's multilingual figures.
UMSAB_OTHER = {"arabic": "ar", "french": "fr", "hindi": "hi", "italian": "it", "portuguese": "pt", "spanish": "es"}
# Extra train-only sentiment sets (`label<TAB>text`, header, CSV-quoted): folder -> (set name, language)
EXTRA_SETS = {"sb10k": ("sb10k-train", "de"), "potts": ("potts-train", "de"),
              "semeval2013-2016": ("semeval-train", "en")}
# The team's hard care posts (data/intents/care-hard-{train,test}.jsonl): each row also carries its sentiment and
# the failure class it was written for, so `triage eval` reports every class on its own. care-hard-outside.jsonl
# holds the same classes, and money matters with personal data, written by other hands and never trained on: how
# the product does on posts it has not seen the like of.
CARE_FILE = "care-hard"


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


def care_rows(split: str, root: Path = INTENTS_DIR, missing_ok: bool = False) -> list[dict[str, str]]:
    """The hard care posts of one split: {"text", "label" (intent), "sentiment", "language", "class"} per row.
    missing_ok: none when the folder has no such file (an `--intents` folder of a company's own texts)."""
    path = Path(root) / f"{CARE_FILE}-{split}.jsonl"
    if missing_ok and not path.exists():
        return []
    rows = [json.loads(line) for line in _lines(path) if line.strip()]
    for number, row in enumerate(rows, 1):
        missing = {"text", "label", "sentiment", "language", "class"} - set(row)
        if missing or row["label"] not in INTENT_LABELS or row["sentiment"] not in SENTIMENT_LABELS:
            raise ValueError(f"{path}, row {number}: needs text, a known label and sentiment, language and class")
    return rows


def _extra(root: Path, folder: str) -> LabelledSet:
    """A train-only TSV set. PotTS' `mixed` label has no place among three classes and is left out; HTML entities
    and escaped \\uXXXX sequences (as the sources give them) are decoded to what a post shows."""
    name, language = EXTRA_SETS[folder]
    path = root / folder / "train.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["label"] in SENTIMENT_LABELS]
    texts = [html.unescape(_unescape_u(row["text"])) for row in rows]
    return LabelledSet(name, "sentiment", texts, [row["label"] for row in rows], "macro_f1", language)


def _unescape_u(text: str) -> str:
    if "\\u" not in text:
        return text
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return text


def training_sets(root: str | Path, extra: bool = False) -> list[LabelledSet]:
    """Everything the sentiment and relevance heads may learn from: train, val and GermEval dev only, less every
    text of a validation split (`validation_sets`).

    Why the filter: all 324 UMSAB English val tweets are also TweetEval val tweets, which are trained on, so
    without it the English validation figure that chooses the epoch and fits the sentiment temperature would
    score memorised text. extra: also the train-only additions (UMSAB's six other languages, SB-10k, PotTS,
    SemEval 2013-2016), which the training config samples from (`mix` in models/train.yaml)."""
    root = Path(root)
    sets = [
        _numbered(root, "umsab/german", "train", "umsab-de-train", "macro_f1", "de"),
        _numbered(root, "umsab/english", "train", "umsab-en-train", "macro_f1", "en"),
        _numbered(root, "tweeteval/sentiment", "val", "tweeteval-val", "macro_recall", "en"),
        *_germeval(root, "dev"),
    ]
    if extra:
        sets += [_numbered(root, f"umsab/{folder}", "train", f"umsab-{code}-train", "macro_f1", code)
                 for folder, code in UMSAB_OTHER.items()]
        sets += [_extra(root, folder) for folder in EXTRA_SETS]
    held_out = {_text_key(text) for s in validation_sets(root, other_languages=extra) for text in s.texts}
    return [_without(s, held_out) for s in sets]


def _text_key(text: str) -> str:
    """What makes two texts the same tweet: case and spacing aside."""
    return " ".join(text.lower().split())


def _without(labelled: LabelledSet, held_out: set[str]) -> LabelledSet:
    keep = [i for i, text in enumerate(labelled.texts) if _text_key(text) not in held_out]
    if len(keep) == len(labelled.texts):
        return labelled
    log.info("validation texts left out of training", extra={"fields": {
        "set": labelled.name, "left_out": len(labelled.texts) - len(keep)}})
    return replace(labelled, texts=[labelled.texts[i] for i in keep], labels=[labelled.labels[i] for i in keep])


def validation_sets(root: str | Path, other_languages: bool = False) -> list[LabelledSet]:
    """Held out from training, used to watch training and pick the checkpoint (never a test split).
    other_languages: also UMSAB's six other val splits (watched, and used to fit the sentiment calibration)."""
    root = Path(root)
    sets = [_numbered(root, "umsab/german", "val", "umsab-de-val", "macro_f1", "de"),
            _numbered(root, "umsab/english", "val", "umsab-en-val", "macro_f1", "en")]
    if other_languages:
        sets += [_numbered(root, f"umsab/{folder}", "val", f"umsab-{code}-val", "macro_f1", code)
                 for folder, code in UMSAB_OTHER.items()]
    return sets


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
        *[_numbered(root, f"umsab/{folder}", "test", f"umsab-{code}-test", "macro_f1", code)
          for folder, code in UMSAB_OTHER.items() if (root / "umsab" / folder).exists()],
    ]
