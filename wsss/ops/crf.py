"""Dense CRF (Krähenbühl & Koltun) through pydensecrf, and PSA's CRF labels from CAMs.

Also the two small steps PSA's CRF labels and random walk share: the background score ``(1 - max CAM) ** alpha``
stacked in front of the CAMs (:func:`alpha_background_scores`) and the argmax mapped back to dataset labels
(:func:`labels_from_scores`).

Example:
    >>> probs = dense_crf(image, scores)             # image (H, W, 3) uint8, scores (K, H, W) -> (K, H, W)
    >>> labels = crf_labels_from_cams(image, cams, classes=np.array([4, 11]), alpha=4)   # (H, W) uint8 in 0..C
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from wsss.ops.cam import background_power

# The reference's CRF settings (PSA ``crf_inference``): Gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 /
# compat 10, 10 mean-field iterations. ``UNARY_CLIP`` is the floor on the scores before ``-log``.
GAUSSIAN_SXY, GAUSSIAN_COMPAT = 3.0, 3.0
BILATERAL_SXY, BILATERAL_SRGB, BILATERAL_COMPAT = 80.0, 13.0, 10.0
ITERATIONS = 10
UNARY_CLIP = 1e-5


def _check_image_and_scores(image: np.ndarray, scores: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} shape {image.shape}")
    if scores.ndim != 3 or scores.shape[0] < 1:
        raise ValueError(f"scores must be (K, H, W) with K >= 1, got shape {scores.shape}")
    if scores.shape[1:] != image.shape[:2]:
        raise ValueError(f"scores are {scores.shape[1]}x{scores.shape[2]} but the image is "
                         f"{image.shape[0]}x{image.shape[1]}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")


def dense_crf(image: np.ndarray, scores: np.ndarray, gaussian_sxy: float = GAUSSIAN_SXY,
              gaussian_compat: float = GAUSSIAN_COMPAT, bilateral_sxy: float = BILATERAL_SXY,
              bilateral_srgb: float = BILATERAL_SRGB, bilateral_compat: float = BILATERAL_COMPAT,
              iterations: int = ITERATIONS) -> np.ndarray:
    """Mean-field dense CRF with a Gaussian and a bilateral Potts term, as PSA's ``crf_inference``.

    The unary is ``-log(clip(scores, 1e-5, 1))``; the scores need not sum to 1 over labels (PSA feeds
    ``(1 - max CAM) ** alpha`` stacked with the CAMs).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        scores: ``(K, H, W)`` label scores in ``[0, 1]``.
        gaussian_sxy, gaussian_compat: position kernel width (pixels) and Potts weight.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel widths (pixels, colour) and weight.
        iterations: mean-field iterations (>= 0).
    Returns:
        ``(K, H, W)`` float32 marginals, summing to 1 over ``K``.
    """
    import pydensecrf.densecrf as dcrf

    image, scores = np.asarray(image), np.asarray(scores)
    _check_image_and_scores(image, scores)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    num_labels, height, width = scores.shape
    unary = -np.log(np.clip(scores.reshape(num_labels, -1), UNARY_CLIP, 1.0)).astype(np.float32)
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=float(gaussian_sxy), compat=float(gaussian_compat))
    crf.addPairwiseBilateral(sxy=float(bilateral_sxy), srgb=float(bilateral_srgb),
                             rgbim=np.ascontiguousarray(image), compat=float(bilateral_compat))
    marginals = crf.inference(int(iterations))
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)


def alpha_background_scores(cams: np.ndarray, alpha: float) -> np.ndarray:
    """PSA's score stack: background ``(1 - max_k cams_k) ** alpha`` (:func:`wsss.ops.cam.background_power`) in
    front of the CAMs.

    A low alpha gives a large background score (only confident foreground survives), a high alpha a small one.

    Args:
        cams: ``(K, H, W)`` CAMs max-normalised to ``[0, 1]``; ``K = 0`` means no class (all background).
        alpha: exponent, > 0.
    Returns:
        ``(K+1, H, W)`` float32, background first.
    """
    cams = np.asarray(cams, dtype=np.float32)
    return np.concatenate([background_power(cams, alpha)[None], cams], axis=0)


def labels_from_scores(scores, classes: np.ndarray) -> np.ndarray:
    """Argmax over a background-first score stack, mapped to dataset labels.

    Args:
        scores: ``(K+1, H, W)`` numpy array or torch tensor, background first.
        classes: ``(K,)`` 0-based foreground class indices of rows ``1..K``.
    Returns:
        ``(H, W)`` uint8: 0 = background, ``classes[k] + 1`` where row ``k + 1`` wins (ties: the first row).
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if scores.ndim != 3 or scores.shape[0] != len(classes) + 1:
        raise ValueError(f"scores have shape {tuple(scores.shape)}, expected ({len(classes) + 1}, H, W) for "
                         f"{len(classes)} classes plus background")
    if len(classes) and (classes.min() < 0 or classes.max() > 253):
        raise ValueError(f"classes must lie in [0, 253], got {classes.tolist()}")
    winner = scores.argmax(0)
    winner = winner.cpu().numpy() if hasattr(winner, "cpu") else np.asarray(winner)
    lookup = np.concatenate([[0], classes + 1]).astype(np.uint8)
    return lookup[winner]


def crf_labels_from_cams(image: np.ndarray, cams: np.ndarray, classes: np.ndarray, alpha: float,
                         crf_params: Optional[dict] = None) -> np.ndarray:
    """PSA's la/ha labels: background ``(1 - max CAM) ** alpha`` + CAMs -> dense CRF -> argmax.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cams: ``(K, H, W)`` CAMs in ``[0, 1]`` of the image's classes.
        classes: ``(K,)`` 0-based foreground class indices of the CAM rows.
        alpha: background exponent, > 0 (PSA: 4 and 32; SEAM: 4 and 24).
        crf_params: keyword arguments of :func:`dense_crf` (default: the reference's).
    Returns:
        ``(H, W)`` uint8 labels: 0 = background, ``c + 1`` = class ``c``.
    """
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if np.ndim(cams) != 3 or len(cams) != len(classes):
        raise ValueError(f"cams have shape {np.shape(cams)} but {len(classes)} classes were given")
    scores = alpha_background_scores(cams, alpha)
    marginals = dense_crf(image, scores, **(crf_params or {}))
    return labels_from_scores(marginals, classes)
