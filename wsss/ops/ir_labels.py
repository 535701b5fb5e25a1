"""IRN's inter-pixel relation (IR) labels: two thresholded CAM labelings, each refined by a dense CRF on hard
labels, combined into confident foreground, confident background and ignore.

Per pass a constant background ``threshold`` goes in front of the CAMs and the argmax gives hard labels
``0..K``; the CRF (IRN's preset: Gaussian 3/3, bilateral sxy 50 / srgb 5 / compat 10, 10 iterations) starts from
one-hot scores, ``gt_prob`` = 0.7 on the label and ``0.3 / K`` on each other label, which is pydensecrf's
``unary_from_labels(..., gt_prob=0.7, zero_unsure=False)`` fed to :func:`wsss.ops.crf.dense_crf` as scores. The
0.30 pass gives the foreground, the 0.05 pass the background; where the first says background and the second
foreground the label is ``IGNORE_INDEX`` (255).

Example:
    >>> labels = ir_labels_from_cams(image, cams, classes=np.array([4, 11]))   # (H, W) uint8 in {0..C, 255}
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from wsss.ops.cam import IGNORE_INDEX, background_constant
from wsss.ops.crf import dense_crf

FG_THRESHOLD = 0.30  # conf_fg_thres
BG_THRESHOLD = 0.05  # conf_bg_thres
GT_PROB = 0.7        # crf_inference_label's gt_prob
# IRN's crf_inference_label (imutils.py): keyword arguments of wsss.ops.crf.dense_crf.
IRN_CRF = {"gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 50.0, "bilateral_srgb": 5.0,
           "bilateral_compat": 10.0, "iterations": 10}


def one_hot_scores(labels: np.ndarray, num_labels: int, gt_prob: float = GT_PROB) -> np.ndarray:
    """Scores whose ``-log`` is pydensecrf's ``unary_from_labels`` without an "unsure" label.

    Args:
        labels: ``(H, W)`` integer labels in ``[0, num_labels)``.
        num_labels: number of labels ``L`` (background included), >= 1.
        gt_prob: score of the given label, in (0, 1); every other label gets ``(1 - gt_prob) / (L - 1)``.
    Returns:
        ``(L, H, W)`` float32.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer (H, W) map, got {labels.dtype} shape {labels.shape}")
    if num_labels < 1 or (labels.size and (labels.min() < 0 or labels.max() >= num_labels)):
        raise ValueError(f"labels must lie in [0, {num_labels}) with num_labels >= 1")
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must lie in (0, 1), got {gt_prob}")
    other = (1.0 - gt_prob) / max(num_labels - 1, 1)
    scores = np.full((num_labels, *labels.shape), other, dtype=np.float32)
    np.put_along_axis(scores, labels[None].astype(np.int64), np.float32(gt_prob), axis=0)
    return scores


def crf_label_refine(image: np.ndarray, labels: np.ndarray, num_labels: int, gt_prob: float = GT_PROB,
                     crf_params: Optional[dict] = None) -> np.ndarray:
    """IRN's ``crf_inference_label``: a dense CRF started from hard labels; returns the argmax label index.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` integer labels in ``[0, num_labels)``.
        num_labels: ``L`` (background included).
        crf_params: keyword arguments of :func:`dense_crf` (default :data:`IRN_CRF`).
    Returns:
        ``(H, W)`` int64 in ``[0, num_labels)``.
    """
    marginals = dense_crf(image, one_hot_scores(labels, num_labels, gt_prob), **(crf_params or IRN_CRF))
    return marginals.argmax(axis=0).astype(np.int64)


def threshold_crf_labels(image: np.ndarray, cams: np.ndarray, classes: np.ndarray, threshold: float,
                         crf_params: Optional[dict] = None) -> np.ndarray:
    """One pass: constant background ``threshold`` in front of the CAMs, argmax, CRF on the hard labels.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cams: ``(K, H, W)`` float CAMs in ``[0, 1]`` (IRN's ``high_res``).
        classes: ``(K,)`` 0-based foreground classes of the rows.
        threshold: background score (IRN: 0.30 and 0.05).
    Returns:
        ``(H, W)`` uint8: 0 = background, ``classes[k] + 1``.
    """
    cams, classes = np.asarray(cams), np.asarray(classes, dtype=np.int64).reshape(-1)
    if cams.ndim != 3 or len(cams) != len(classes):
        raise ValueError(f"cams have shape {cams.shape} but {len(classes)} classes were given")
    if len(classes) and (classes.min() < 0 or classes.max() + 1 >= IGNORE_INDEX):
        raise ValueError(f"classes must be 0-based foreground indices below {IGNORE_INDEX - 1}, got {classes}")
    scores = np.concatenate([background_constant(cams, threshold)[None], cams], axis=0)
    hard = scores.argmax(axis=0)  # ties go to the background, as np.argmax in IRN
    refined = crf_label_refine(image, hard, len(classes) + 1, crf_params=crf_params)
    return np.concatenate([[0], classes + 1]).astype(np.uint8)[refined]


def ir_labels_from_cams(image: np.ndarray, cams: np.ndarray, classes: np.ndarray,
                        fg_threshold: float = FG_THRESHOLD, bg_threshold: float = BG_THRESHOLD,
                        crf_params: Optional[dict] = None) -> np.ndarray:
    """IRN's ``cam_to_ir_label``: confident foreground (``fg_threshold`` pass), confident background (both passes
    say background), ignore in between.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cams: ``(K, H, W)`` float CAMs in ``[0, 1]``; classes: ``(K,)`` 0-based.
        fg_threshold, bg_threshold: the two background scores, ``0 < bg_threshold <= fg_threshold < 1``.
        crf_params: keyword arguments of :func:`dense_crf` (default :data:`IRN_CRF`).
    Returns:
        ``(H, W)`` uint8: 0 = background, ``c + 1`` = class ``c``, 255 = ignore.
    """
    if not 0 < bg_threshold <= fg_threshold < 1:
        raise ValueError(f"thresholds must satisfy 0 < bg ({bg_threshold}) <= fg ({fg_threshold}) < 1")
    fg = threshold_crf_labels(image, cams, classes, fg_threshold, crf_params)
    bg = threshold_crf_labels(image, cams, classes, bg_threshold, crf_params)
    out = fg.copy()
    out[fg == 0] = IGNORE_INDEX
    out[(fg == 0) & (bg == 0)] = 0
    return out
