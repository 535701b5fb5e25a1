"""From CAMs to label maps: the background score, the argmax, and a fast background-threshold sweep.

A CAM artifact stores, per image, ``cams`` (K, H, W) max-normalised to [0, 1] and ``classes`` (K,) the 0-based
foreground classes of the rows. A background row is put in front, either a constant ``threshold`` (PSA's
``out_cam_pred`` uses 0.2, SEAM's ``--curve`` sweeps 0.00..0.59) or ``(1 - max_k cams_k) ** alpha`` (PSA/SEAM's
la/ha alphas), and the argmax over ``[background, cams]`` gives labels ``0`` (background) or ``classes[k] + 1``.
Ties go to the first row, so a pixel whose best class score equals the background score is background (as with
``np.argmax`` in the reference code); with a constant threshold ``t`` a pixel is foreground iff its best score is
strictly greater than ``t``. Comparisons are made in the CAMs' dtype (``t`` is cast to it).

Example:
    >>> cams = np.array([[[0.9, 0.1]], [[0.3, 0.4]]], np.float32)      # K=2 rows, H=1, W=2
    >>> cams_to_labels(cams, np.array([4, 11]), threshold=0.2)
    array([[ 5, 12]], dtype=uint8)
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from wsss.ops import IGNORE_INDEX
from wsss.ops.confusion import _describe


def _check_cams(cams: np.ndarray, classes: Optional[np.ndarray] = None) -> None:
    if cams.ndim != 3 or not np.issubdtype(cams.dtype, np.floating):
        raise ValueError(f"cams must be a float (K, H, W) array, got {cams.dtype} of shape {cams.shape}")
    if classes is None:
        return
    if classes.ndim != 1 or classes.shape[0] != cams.shape[0] or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integer (K,) with K = {cams.shape[0]} rows of cams, "
                         f"got {classes.dtype} of shape {classes.shape}")
    if classes.size and (classes.min() < 0 or classes.max() + 1 >= IGNORE_INDEX):
        raise ValueError(f"classes must be 0-based foreground indices below {IGNORE_INDEX - 1}, "
                         f"got {classes.tolist()}")


def background_constant(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Constant background score. cams: (K, H, W). Returns (H, W) filled with ``threshold`` in the CAMs' dtype."""
    _check_cams(cams)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    return np.full(cams.shape[1:], threshold, dtype=cams.dtype)


def background_power(cams: np.ndarray, alpha: float) -> np.ndarray:
    """Background score ``(1 - max_k cams_k) ** alpha``; all ones when K = 0.

    Args:
        cams: (K, H, W) in [0, 1].
        alpha: > 0; a larger alpha gives a smaller background, so more foreground.

    Returns:
        (H, W) in the CAMs' dtype.
    """
    _check_cams(cams)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if cams.shape[0] == 0:
        return np.ones(cams.shape[1:], cams.dtype)
    base = 1 - cams.max(axis=0)
    return np.power(np.clip(base, 0, None), cams.dtype.type(alpha))


def cams_to_labels(cams: np.ndarray, classes: np.ndarray, *, threshold: Optional[float] = None,
                   alpha: Optional[float] = None) -> np.ndarray:
    """Label map from the argmax over ``[background, cams]`` (give exactly one of ``threshold`` or ``alpha``).

    Args:
        cams: (K, H, W) float, each row max-normalised to [0, 1].
        classes: (K,) int, 0-based foreground class of each row.
        threshold: constant background score (see :func:`background_constant`).
        alpha: power background (see :func:`background_power`).

    Returns:
        (H, W) uint8: 0 = background, ``classes[k] + 1`` where row ``k`` wins.
    """
    cams, classes = np.asarray(cams), np.asarray(classes)
    _check_cams(cams, classes)
    if (threshold is None) == (alpha is None):
        raise ValueError("give exactly one of threshold or alpha")
    bg = background_constant(cams, threshold) if alpha is None else background_power(cams, alpha)
    winner = np.concatenate([bg[None], cams], axis=0).argmax(axis=0)
    lut = np.concatenate([[0], classes + 1]).astype(np.uint8)
    return lut[winner]


def foreground_scores(cams: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the best foreground score and the label it would get.

    Args:
        cams: (K, H, W) float; classes: (K,) int.

    Returns:
        (score (H, W) in the CAMs' dtype, zeros when K = 0; label (H, W) int64, ``classes[argmax] + 1``).
    """
    cams, classes = np.asarray(cams), np.asarray(classes)
    _check_cams(cams, classes)
    if cams.shape[0] == 0:
        return np.zeros(cams.shape[1:], cams.dtype), np.zeros(cams.shape[1:], np.int64)
    best = cams.argmax(axis=0)
    score = np.take_along_axis(cams, best[None], axis=0)[0]
    return score, classes.astype(np.int64)[best] + 1


def threshold_sweep_confusions(cams: np.ndarray, classes: np.ndarray, gt: np.ndarray,
                               thresholds: Sequence[float], num_classes: int,
                               ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrices of :func:`cams_to_labels` at every constant threshold, in one pass over the pixels.

    A pixel with best score ``s`` is foreground exactly for the thresholds ``t < s``. With the thresholds sorted,
    ``n = searchsorted(thresholds, s)`` of them make it foreground; one ``bincount`` over
    ``(n, gt, foreground label)`` and cumulative sums over ``n`` then give every threshold's matrix, so the cost
    is one pass over the pixels plus O(T N^2), not T passes.

    Args:
        cams: (K, H, W) float in [0, 1]; classes: (K,) int 0-based.
        gt: (H, W) int labels in ``0..N-1`` or ``ignore_index`` (left out).
        thresholds: (T,) background scores, in any order.
        num_classes: N, background included.

    Returns:
        (T, N, N) int64, in the order of ``thresholds``.
    """
    score, label, gt, thr = _sweep_inputs(cams, classes, gt, thresholds, num_classes, ignore_index)
    n = num_classes
    order = np.argsort(thr, kind="stable")
    valid = gt != ignore_index
    n_fg = np.searchsorted(thr[order], score.ravel()[valid], side="left")
    code = (n_fg * n + gt[valid]) * n + label.ravel()[valid]
    hist = np.bincount(code, minlength=(thr.size + 1) * n * n).reshape(thr.size + 1, n, n)
    # Threshold j (sorted) sees as foreground the pixels with n_fg > j, as background those with n_fg <= j.
    out = np.cumsum(hist[::-1], axis=0)[::-1][1:].copy()
    out[:, :, 0] += np.cumsum(hist, axis=0)[:-1].sum(axis=2)
    result = np.empty_like(out)
    result[order] = out
    return result


def _sweep_inputs(cams, classes, gt, thresholds, n: int, ignore_index: int):
    """Validated (score (H, W), label (H, W), gt (H*W,) int64, thresholds (T,) in the CAMs' dtype)."""
    score, label = foreground_scores(cams, classes)
    gt = np.asarray(gt)
    if gt.shape != score.shape:
        raise ValueError(f"gt shape {gt.shape} differs from the CAMs' {score.shape}")
    classes = np.asarray(classes)
    if classes.size and classes.max() + 1 >= n:
        raise ValueError(f"classes {classes.tolist()} do not fit {n} classes (background included)")
    thr = np.asarray(thresholds, dtype=score.dtype)
    if thr.ndim != 1 or thr.size == 0 or not np.isfinite(thr).all():
        raise ValueError(f"thresholds must be a non-empty list of finite numbers, got {thresholds!r}")
    gt = gt.ravel().astype(np.int64)
    bad = np.unique(gt[((gt < 0) | (gt >= n)) & (gt != ignore_index)]).tolist()
    if bad:
        raise ValueError(f"gt holds {_describe(bad, n, ignore_index)}")
    return score, label, gt, thr
