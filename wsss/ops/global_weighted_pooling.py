"""Class scores of the single-stage network: normalised Global Weighted Pooling (nGWP) + focal mask penalty.

With logits ``s`` (B, K, h, w) whose channel 0 is the background and masks ``m = softmax(s)`` over the K channels:

    nGWP_c    = sum_i s_{c,i} m_{c,i} / (1 + sum_i m_{c,i})        (sums over raw pixels, epsilon 1)
    mbar_c    = mean_i m_{c,i}
    penalty_c = (1 - mbar_c) ** p * log(lambda + mbar_c)            (p = 3, lambda = 0.01 in the reference)
    score_c   = nGWP_c + penalty_c, for the foreground channels c = 1..K-1 only

Example:
    >>> logits = torch.randn(2, 21, 16, 16)
    >>> scores, masks = ngwp_class_scores(logits)
    >>> scores.shape, masks.shape
    (torch.Size([2, 20]), torch.Size([2, 21, 16, 16]))
"""
from __future__ import annotations

import torch

NGWP_EPS = 1.0
FOCAL_POWER = 3.0
FOCAL_LAMBDA = 0.01


def _check_maps(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be (B, K, H, W), got shape {tuple(x.shape)}")


def normalized_global_weighted_pooling(logits: torch.Tensor, masks: torch.Tensor,
                                       eps: float = NGWP_EPS) -> torch.Tensor:
    """nGWP: the mask-weighted mean of the logits, with ``eps`` added to the mask mass.

    Args:
        logits: (B, K, H, W) class logits.
        masks: (B, K, H, W) non-negative weights, e.g. the softmax of ``logits``.
        eps: added to the denominator (1.0 in the reference; it pulls small masks' scores towards 0).

    Returns:
        (B, K) pooled scores.
    """
    _check_maps("logits", logits)
    _check_maps("masks", masks)
    if logits.shape != masks.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and masks {tuple(masks.shape)} must have the same shape")
    if eps <= 0:
        raise ValueError(f"nGWP eps must be > 0, got {eps}")
    weighted = (logits * masks).flatten(2).sum(-1)
    return weighted / (eps + masks.flatten(2).sum(-1))


def focal_mask_penalty(masks: torch.Tensor, power: float = FOCAL_POWER,
                       lam: float = FOCAL_LAMBDA) -> torch.Tensor:
    """Penalty ``(1 - mbar) ** power * log(lam + mbar)`` on each mask's mean ``mbar`` over the pixels.

    Args:
        masks: (B, K, H, W) in [0, 1].
        power: focal exponent p >= 0 (3 in the reference).
        lam: lambda > 0 inside the log (0.01 in the reference).

    Returns:
        (B, K); <= 0 whenever ``mbar < 1 - lam``: a class with little mask mass gets a strongly negative score.
    """
    _check_maps("masks", masks)
    if lam <= 0 or power < 0:
        raise ValueError(f"focal penalty needs lam > 0 and power >= 0, got lam={lam}, power={power}")
    mean_mass = masks.flatten(2).mean(-1)
    return (1.0 - mean_mass).pow(power) * torch.log(lam + mean_mass)


def ngwp_class_scores(logits: torch.Tensor, power: float = FOCAL_POWER,
                      lam: float = FOCAL_LAMBDA) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground class scores and masks from logits whose channel 0 is the background.

    Args:
        logits: (B, K, H, W), background first.
        power, lam: focal penalty settings (see :func:`focal_mask_penalty`).

    Returns:
        scores (B, K - 1): nGWP + focal penalty of the foreground channels (for a multi-label soft-margin loss);
        masks (B, K, H, W): softmax of ``logits`` over the channels.
    """
    _check_maps("logits", logits)
    if logits.shape[1] < 2:
        raise ValueError(f"logits need a background and at least one class channel, got {logits.shape[1]}")
    masks = torch.softmax(logits, dim=1)
    scores = normalized_global_weighted_pooling(logits, masks) + focal_mask_penalty(masks, power, lam)
    return scores[:, 1:], masks
