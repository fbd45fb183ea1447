"""Calibrated doubt: temperature scaling of a head's scores, its expected calibration error, and the score
below which a post is marked `needs_review`.

A softmax head trained with cross-entropy on many easy examples is over-confident: its 0.9 is right
less often than nine times in ten, so a threshold on it means nothing to a reader. Dividing the logits
by one temperature, fitted on held-out data (Guo et al., 2017, "On Calibration of Modern Neural
Networks"), keeps every prediction (the order of the scores is unchanged) and makes the top score an
estimate of how often that label is right. The review threshold is then chosen on the same held-out
data: the top score under which a post's label is more often wrong than right, so it is better checked
by an agent than routed automatically.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

ECE_BINS = 15
REVIEW_GRID = [round(0.30 + step / 100, 2) for step in range(66)]  # 0.30 .. 0.95


def fit_temperature(logits: torch.Tensor, gold: torch.Tensor) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(logits / T) on (logits, gold)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), gold)
        loss.backward()
        return loss

    optimizer.step(closure)
    return round(float(log_t.detach().exp()), 4)


def expected_calibration_error(probs: torch.Tensor, gold: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins and
    weighted by how many predictions fall into each."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == gold).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs()
    return round(float(error), 4)


def review_threshold(probs: torch.Tensor, gold: torch.Tensor, grid: Sequence[float] = REVIEW_GRID) -> float:
    """The top-score threshold that, on held-out data, flags the most wrong predictions net of right ones (each
    flagged right prediction costs an agent as much as a flagged wrong one saves); ties go to the lower threshold,
    which flags fewer posts. With calibrated scores this lands near 0.5: a post is flagged when its label is more
    likely wrong than right."""
    confidence, predicted = probs.max(dim=1)
    wrong = predicted != gold

    def net(threshold: float) -> int:
        flagged = confidence < threshold
        return int((flagged & wrong).sum()) - int((flagged & ~wrong).sum())

    return max(grid, key=lambda threshold: (net(threshold), -threshold))


def calibrate(logits: torch.Tensor, gold: torch.Tensor) -> dict[str, Optional[float]]:
    """Temperature, review threshold and ECE before and after, all on the same held-out (logits, gold)."""
    temperature = fit_temperature(logits, gold)
    calibrated = torch.softmax(logits / temperature, dim=1)
    review_below = review_threshold(calibrated, gold)
    flagged = calibrated.max(dim=1).values < review_below
    correct = calibrated.argmax(dim=1) == gold
    return {"temperature": temperature, "review_below": review_below,
            "ece_before": expected_calibration_error(torch.softmax(logits, dim=1), gold),
            "ece_after": expected_calibration_error(calibrated, gold),
            "review_share": round(float(flagged.float().mean()), 4),
            "accuracy_not_flagged": round(float(correct[~flagged].float().mean()), 4) if (~flagged).any() else None,
            "accuracy_flagged": round(float(correct[flagged].float().mean()), 4) if flagged.any() else None,
            "n": len(gold)}
