"""The metrics the benchmarks publish, so our figures can stand beside theirs."""
from __future__ import annotations

from typing import Optional, Sequence


def _per_label(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str],
               weights: Optional[Sequence[float]] = None) -> list[tuple[float, float, float]]:
    weights = weights if weights is not None else [1.0] * len(gold)
    scores = []
    for label in labels:
        tp = sum(w for g, p, w in zip(gold, predicted, weights) if g == label and p == label)
        fp = sum(w for g, p, w in zip(gold, predicted, weights) if g != label and p == label)
        fn = sum(w for g, p, w in zip(gold, predicted, weights) if g == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append((precision, recall, f1))
    return scores


def macro_f1(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str],
             weights: Optional[Sequence[float]] = None) -> float:
    """`weights`: each text counts this much (default 1), as it did in training: model selection then scores
    what the fit optimised (models/train.py's intent head, whose hard care posts count a quarter)."""
    return sum(f for _, _, f in _per_label(gold, predicted, labels, weights)) / len(labels)


def macro_recall(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    return sum(r for _, r, _ in _per_label(gold, predicted, labels)) / len(labels)


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Micro-F1 equals accuracy when every document has exactly one label."""
    return sum(1 for g, p in zip(gold, predicted) if g == p) / len(gold) if gold else 0.0


def score(metric: str, gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    if metric == "macro_f1":
        return macro_f1(gold, predicted, labels)
    if metric == "macro_recall":
        return macro_recall(gold, predicted, labels)
    if metric == "micro_f1":
        return accuracy(gold, predicted)
    raise ValueError(f"unknown metric {metric}")
