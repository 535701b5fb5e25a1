"""The evaluator's core: confusion counts of many (ground truth, item) pairs, summed, on joblib workers.

Each job is ``(id, ground-truth PNG, item file)``; a worker reads both and adds the item's confusion counts to its
chunk's sum (label PNGs directly, CAMs through a background rule or a whole threshold sweep). Items whose size
differs from their ground truth are collected and reported together, not one at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from wsss.artifacts.items import read_cam, read_label
from wsss.errors import UserError
from wsss.ops.cam import cams_to_labels, threshold_sweep_confusions
from wsss.ops.confusion import confusion_matrix

BACKEND = "multiprocessing"  # joblib backend for --workers > 1 (fork on Linux); see benchmarks/README.md
RESULT_BUDGET = 64 * 2 ** 20  # bytes of chunk results held at once before they are summed


class _SizeMismatch(Exception):
    """An item whose size differs from its ground truth; collected, then reported together."""


def _check_size(shape: tuple, gt: np.ndarray) -> None:
    if tuple(shape) != gt.shape:
        raise _SizeMismatch("x".join(map(str, shape)))


def label_counts(gt: np.ndarray, path: Path, n: int) -> np.ndarray:
    pred = read_label(path, "prediction")
    _check_size(pred.shape, gt)
    return confusion_matrix(gt, pred, n)


def cam_counts(gt: np.ndarray, path: Path, n: int, background: dict) -> np.ndarray:
    cams, classes = read_cam(path)
    _check_size(cams.shape[1:], gt)
    if classes.size and classes.max() >= n - 1:
        raise ValueError(f"CAM classes {classes.tolist()} outside the dataset's {n - 1} foreground classes")
    labels = cams_to_labels(cams, classes, threshold=background.get("threshold"), alpha=background.get("alpha"))
    return confusion_matrix(gt, labels, n)


def sweep_counts(gt: np.ndarray, path: Path, n: int, thresholds: np.ndarray) -> np.ndarray:
    cams, classes = read_cam(path)
    _check_size(cams.shape[1:], gt)
    return threshold_sweep_confusions(cams, classes, gt, thresholds, n)


def _score_chunk(jobs: list, n: int, fn, **kwargs) -> tuple[Optional[np.ndarray], list[str]]:
    """Sum of ``fn(gt, item_path, n, **kwargs)`` over ``jobs`` and the list of size mismatches."""
    total, mismatched = None, []
    for item_id, gt_path, item_path in jobs:
        gt = read_label(gt_path, "ground truth")
        try:
            counts = fn(gt, item_path, n, **kwargs)
        except _SizeMismatch as e:
            mismatched.append(f"{item_id} ({e.args[0]} vs ground truth {gt.shape[0]}x{gt.shape[1]})")
            continue
        except ValueError as e:
            raise UserError(f"{item_path} against {gt_path}: {e}") from None
        if total is None:
            total = counts.copy()
        else:
            total += counts
    return total, mismatched


def _group_size(workers: int, n: int, kwargs: dict) -> int:
    """Chunks per pool call: as many as :data:`RESULT_BUDGET` holds of their results, at least 4 per worker."""
    per_result = 8 * n * (n + 1) * len(kwargs.get("thresholds", (None,)))  # int64 (N, N + 1), per threshold
    return max(4 * max(1, workers), RESULT_BUDGET // per_result)


def in_parallel(fn, jobs: list, workers: int, n: int, **kwargs) -> tuple[Optional[np.ndarray], list[str]]:
    """Run ``fn`` over ``jobs`` in chunks on ``workers`` (0 = here); returns (summed counts, size mismatches).

    Streaming: the chunks' counts are summed group by group (one pool call per group of :func:`_group_size`
    chunks, on one pool), so memory holds the total and at most one group of chunk results, whatever the number
    of ids. Holding every chunk's result instead would keep, for a 40k-image COCO val swept over 61 thresholds,
    625 stacks of 61 x 81 x 81 int64 (2 GB).
    """
    size = max(1, min(64, -(-len(jobs) // max(1, 4 * workers))))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    total, mismatched = None, []

    def add(parts: Iterable) -> None:
        nonlocal total
        for counts, missed in parts:
            mismatched.extend(missed)
            if counts is not None:
                total = counts if total is None else np.add(total, counts, out=total)

    if workers <= 1 or len(chunks) == 1:
        add(_score_chunk(c, n, fn, **kwargs) for c in chunks)
        return total, mismatched
    from joblib import Parallel, delayed

    group = _group_size(workers, n, kwargs)
    with Parallel(n_jobs=workers, backend=BACKEND) as pool:
        for start in range(0, len(chunks), group):
            add(pool(delayed(_score_chunk)(c, n, fn, **kwargs) for c in chunks[start:start + group]))
    return total, mismatched
