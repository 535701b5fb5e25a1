"""Classification metrics for the image-level classifiers."""
from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class average precision (area under the precision-recall steps, as VOC's classification toolkit).

    Args:
        scores: (N, C) classifier scores.
        targets: (N, C) 0/1 ground truth.

    Returns:
        (C,) AP per class; NaN for a class with no positive example.
    """
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be (N, C), got {scores.shape} and {targets.shape}")
    ap = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        pos = targets[:, c].sum()
        if pos == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = targets[order, c]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap[c] = precision[hits].sum() / pos
    return ap


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean of :func:`average_precision` over classes that have positives."""
    ap = average_precision(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
