"""Confusion matrices over label maps and the scores read from them (IoU, mIoU, precision, recall, accuracy).

Conventions (``users_and_anchors.md`` §C2): one matrix accumulated over the whole split, rows = ground truth,
columns = prediction; ground-truth pixels equal to the ignore index (255) are left out.

A *prediction* equal to the ignore index (an "unlabelled" pixel, as in CRF pseudo labels with an uncertain band)
counts as **wrong**: a false negative of its ground-truth class and a false positive of no class. That is what
SEAM's ``evaluation.py`` does (its per-class ground-truth count includes those pixels, its prediction counts do
not), so scores stay comparable with SEAM/AffinityNet numbers. irn instead relabels them as background and AFA's
``pseudo_scores`` drops them; both make an uncertain band look better than it is. To keep that count, the matrix
has one extra column: ``(N, N + 1)``, where column ``N`` holds, per ground-truth class, the pixels predicted as
ignore. Every function here also accepts a plain square ``(N, N)`` matrix.

A class absent from both the ground truth and the prediction has an undefined IoU (NaN) and is left out of the
mean (SEAM scores it 0, which only differs on splits that lack a class, e.g. tiny toy splits).

Example:
    >>> gt = np.array([[0, 1], [1, 255]], np.uint8); pred = np.array([[0, 1], [0, 1]], np.uint8)
    >>> confusion_matrix(gt, pred, num_classes=2)
    array([[1, 0, 0],
           [1, 1, 0]])
    >>> iou_from_confusion(confusion_matrix(gt, pred, 2))
    array([0.5, 0.5])
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from wsss.ops import IGNORE_INDEX


def _describe(values: list[int], num_classes: int, ignore_index: int) -> str:
    shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
    return f"label values [{shown}] outside 0..{num_classes - 1} and {ignore_index}"


def _check_inputs(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred differ in shape: {gt.shape} vs {pred.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, a in (("gt", gt), ("pred", pred)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Count (ground truth, prediction) label pairs in one pass over the pixels (see :func:`pair_counts`).

    Args:
        gt: (...) integer labels in ``0..N-1`` or ``ignore_index`` (left out).
        pred: same shape, labels in ``0..N-1`` or ``ignore_index`` (counted as wrong, in the last column).
        num_classes: N, background included.
        ignore_index: the "void" label.

    Returns:
        (N, N + 1) int64: ``[g, p]`` = pixels with gt ``g`` predicted ``p``; ``[g, N]`` = predicted ignore.

    Raises:
        ValueError: shapes differ, or either map holds a value that is neither a class nor ``ignore_index``.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    _check_inputs(gt, pred, num_classes)
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and num_classes <= 255 and 0 <= ignore_index <= 255:
        return _confusion_uint8(gt, pred, num_classes, ignore_index)
    return _confusion_general(gt, pred, num_classes, ignore_index)


def pair_counts(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How often each (gt, pred) value pair occurs in two uint8 maps, as codes ``gt << 8 | pred`` and counts.

    Label maps are made of long runs of one pair along the rows, so when runs are few (fewer than 1/8 of the
    pixels) the runs are listed with their lengths (a code may appear in several runs), which is several times
    faster than a ``bincount`` over every pixel on VOC-like masks; otherwise (noisy maps) the per-pixel
    ``bincount`` gives each code once. Either way the counts of equal codes sum to the pixel counts.

    Returns:
        (codes (R,) uint16, counts (R,) int64).
    """
    code = gt.astype(np.uint16)
    code <<= 8
    code |= pred
    flat = code.ravel()
    changed = flat[1:] != flat[:-1]
    runs = np.count_nonzero(changed) + 1
    if 8 * runs > flat.size:
        table = np.bincount(flat, minlength=1 << 16)
        codes = np.flatnonzero(table)
        return codes.astype(np.uint16), table[codes]
    starts = np.empty(runs, np.intp)
    starts[0] = 0
    np.add(np.flatnonzero(changed), 1, out=starts[1:])
    return flat[starts], np.diff(starts, append=flat.size)


@functools.lru_cache(maxsize=8)
def _value_maps(n: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 value -> matrix row (-1: left out) and -> column (N: predicted ignore); -2 marks a non-label."""
    row = np.full(256, -2, np.intp)
    row[:n] = np.arange(n)
    row[ignore_index] = -1
    col = row.copy()
    col[ignore_index] = n
    row.flags.writeable = col.flags.writeable = False
    return row, col


def _confusion_uint8(gt: np.ndarray, pred: np.ndarray, n: int, ignore_index: int) -> np.ndarray:
    """Fast path: :func:`pair_counts`, then lookups and validation on the few (code, count) pairs only."""
    codes, counts = pair_counts(gt, pred)
    row, col = _value_maps(n, ignore_index)
    g, p = row[codes >> 8], col[codes & 0xFF]
    if g.min(initial=0) == -2:
        raise ValueError(f"gt holds {_describe(np.unique(codes[g == -2] >> 8).tolist(), n, ignore_index)}")
    if p.min(initial=0) == -2:
        raise ValueError(f"pred holds {_describe(np.unique(codes[p == -2] & 0xFF).tolist(), n, ignore_index)}")
    keep = g >= 0
    cells = np.bincount(g[keep] * (n + 1) + p[keep], weights=counts[keep], minlength=n * (n + 1))
    return cells.astype(np.int64).reshape(n, n + 1)


def _confusion_general(gt: np.ndarray, pred: np.ndarray, n: int, ignore_index: int) -> np.ndarray:
    """Any integer dtype: validate with masks, then ``bincount`` over ``gt * (N + 1) + pred``."""
    gt = gt.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    for name, a in (("gt", gt), ("pred", pred)):
        bad = (a < 0) | (a >= n)
        bad &= a != ignore_index
        if bad.any():
            raise ValueError(f"{name} holds {_describe(np.unique(a[bad]).tolist(), n, ignore_index)}")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    pred[pred == ignore_index] = n
    return np.bincount(gt * (n + 1) + pred, minlength=n * (n + 1)).reshape(n, n + 1)


def _split(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, ground-truth totals, prediction totals), each (N,), from (N, N) or (N, N + 1)."""
    cm = np.asarray(cm)
    n = cm.shape[0] if cm.ndim == 2 else -1
    if cm.ndim != 2 or cm.shape[1] not in (n, n + 1):
        raise ValueError(f"expected a confusion matrix (N, N) or (N, N + 1), got shape {cm.shape}")
    square = cm[:, :n]
    return np.diagonal(square).astype(np.float64), cm.sum(1, dtype=np.float64), square.sum(0, dtype=np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both ground truth and prediction.

    Args:
        cm: (N, N) or (N, N + 1) confusion matrix (see :func:`confusion_matrix`).

    Returns:
        (N,) float64 in [0, 1] or NaN.
    """
    tp, gt_total, pred_total = _split(cm)
    return _ratio(tp, gt_total + pred_total - tp)


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision TP / predicted and recall TP / ground truth, each (N,), NaN where undefined."""
    tp, gt_total, pred_total = _split(cm)
    return _ratio(tp, pred_total), _ratio(tp, gt_total)


def mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN when there are none (without numpy's empty-slice warning)."""
    values = np.asarray(values, np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def miou(cm: np.ndarray, include_background: bool = True, background_index: int = 0) -> float:
    """Mean IoU over the classes present in ground truth or prediction.

    Args:
        cm: (N, N) or (N, N + 1) confusion matrix.
        include_background: False gives the foreground-only mean (1-stage-wseg's first printed number).
        background_index: which class is background.
    """
    iou = iou_from_confusion(cm)
    if not include_background:
        iou = np.delete(iou, background_index)
    return mean_ignoring_nan(iou)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct pixels / scored pixels (pixels predicted as ignore count as scored and wrong); NaN if none."""
    tp, gt_total, _ = _split(cm)
    total = gt_total.sum()
    return float(tp.sum() / total) if total > 0 else float("nan")


class ConfusionMatrix:
    """Accumulates one (N, N + 1) confusion matrix over a whole split (the evaluator's core).

    Example:
        >>> acc = ConfusionMatrix(num_classes=3)
        >>> for gt, pred in [([[0, 1]], [[0, 1]]), ([[2, 255]], [[1, 0]])]:
        ...     acc.update(np.array(gt, np.uint8), np.array(pred, np.uint8))
        >>> round(acc.compute()["miou"], 4)      # IoU 1, 1/2, 0
        0.5
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 matrix: Optional[np.ndarray] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), np.int64)
        if matrix is not None:
            self.add(matrix)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one (H, W) pair of label maps."""
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore_index)

    def add(self, matrix: np.ndarray) -> None:
        """Add counts computed elsewhere: (N, N) or (N, N + 1)."""
        matrix = np.asarray(matrix)
        n = self.num_classes
        if matrix.shape not in ((n, n), (n, n + 1)):
            raise ValueError(f"expected a ({n}, {n}) or ({n}, {n + 1}) matrix, got shape {matrix.shape}")
        self.matrix[:, :matrix.shape[1]] += matrix.astype(np.int64)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another accumulator's counts (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError("cannot merge confusion matrices of different classes or ignore index")
        self.matrix += other.matrix
        return self

    def compute(self) -> dict:
        """Scores: ``iou``, ``precision``, ``recall`` (N,) and ``miou``, ``miou_foreground``, ``pixel_accuracy``."""
        precision, recall = precision_recall(self.matrix)
        return {"iou": iou_from_confusion(self.matrix), "precision": precision, "recall": recall,
                "miou": miou(self.matrix), "miou_foreground": miou(self.matrix, include_background=False),
                "pixel_accuracy": pixel_accuracy(self.matrix)}
