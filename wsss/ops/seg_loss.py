"""Segmentation losses of the stage-2 retraining (``retrain.md`` §2): plain and balanced cross-entropy, the MSC sum.

* :func:`cross_entropy`: CE averaged over the valid (non-ignore) pixels of the whole batch, as
  ``CrossEntropyLoss(ignore_index=255)``; a batch whose pixels are all ignored gives 0 (torch gives NaN).
* :func:`balanced_cross_entropy` (the "DSRG-style" CE of the AdvCAM / ReCAM / CLIP-ES recipes): with the
  per-pixel CE over the whole batch, ``L = 1/2 (mean over background pixels + mean over foreground pixels)``;
  ignore pixels are in neither set. An empty set contributes nothing and the mean runs over the non-empty sets
  (background only -> the background mean; all ignored -> 0), where the reference divides by zero.
* :func:`segmentation_loss`: the sum of one such term per network output (deeplab-pytorch: the 4 MSC outputs),
  each against the labels resized to that output's size by :func:`resize_labels` (nearest, pixel-centre sampling
  ``src = floor((j + 0.5) * H / h)``, what PIL ``NEAREST`` does in the reference). Logits are never upsampled here.

Every empty term is an exact 0 with a finite (zero) gradient, never NaN.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 2, 2)
    >>> labels = torch.tensor([[[0, 1], [255, 255]]])
    >>> round(float(cross_entropy(logits, labels)), 4)            # log 3 on the two valid pixels
    1.0986
    >>> float(cross_entropy(logits, torch.full((1, 2, 2), 255)))  # nothing to learn from
    0.0
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from wsss.ops import IGNORE_INDEX

BACKGROUND = 0


def check_logits_and_labels(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ``ValueError`` unless logits are (B, C, h, w) float and labels (B, h', w') integers in 0..C-1 or ignore."""
    if logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be float (B, C, h, w), got {tuple(logits.shape)} {logits.dtype}")
    if labels.ndim != 3 or labels.is_floating_point() or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be integer (B={logits.shape[0]}, H, W), got {tuple(labels.shape)} "
                         f"{labels.dtype}")
    if labels.device.type == "meta":
        return
    bad = (labels < 0) | ((labels >= logits.shape[1]) & (labels != ignore_index))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(f"labels hold {value}, outside 0..{logits.shape[1] - 1} and the ignore value "
                         f"{ignore_index}")


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest resize with pixel-centre sampling (PIL ``NEAREST``): output (i, j) takes source
    ``(floor((i + 0.5) * H / h), floor((j + 0.5) * W / w))``.

    Args:
        labels: (B, H, W) integer labels (255 = ignore is kept exactly).
        size: (h, w).

    Returns:
        (B, h, w) int64; the input itself (as int64) when the size already matches.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    size = tuple(int(s) for s in size)
    if tuple(labels.shape[-2:]) == size:
        return labels.long()
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].long()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; exactly 0 (finite, zero gradient) when the mask is empty.

    Half-precision values are summed in float32 (a bf16 pixel count is inexact above 256).
    """
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-pixel CE: (B, C, h, w) logits and (B, h, w) labels -> (B, h, w), 0 at ignored pixels."""
    check_logits_and_labels(logits, labels, ignore_index)
    if logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in size; "
                         f"resize the labels first (resize_labels)")
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="none")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """CE averaged over the batch's valid pixels; 0 when every pixel is ignored.

    Args:
        logits: (B, C, h, w) raw scores.
        labels: (B, h, w) integers in 0..C-1, or ``ignore_index``.

    Returns:
        Scalar >= 0.
    """
    ce = pixel_cross_entropy(logits, labels, ignore_index)
    return _masked_mean(ce, labels != ignore_index)


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``1/2 (mean CE over background pixels + mean CE over foreground pixels)`` over the whole batch.

    Background = label 0, foreground = any other label except ``ignore_index``. An empty set is left out of the
    average: only background -> the background mean, only foreground -> the foreground mean, all ignored -> 0.

    Args:
        logits: (B, C, h, w) raw scores.
        labels: (B, h, w) integers in 0..C-1, or ``ignore_index``.

    Returns:
        Scalar >= 0.
    """
    ce = pixel_cross_entropy(logits, labels, ignore_index)
    background = labels == BACKGROUND
    foreground = (labels != BACKGROUND) & (labels != ignore_index)
    present = background.any().to(ce.dtype) + foreground.any().to(ce.dtype)
    return (_masked_mean(ce, background) + _masked_mean(ce, foreground)) / present.clamp_min(1.0)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": cross_entropy, "balanced_ce": balanced_cross_entropy}


def term_name(output: str) -> str:
    """Name of the loss term of one output: ``logits`` -> ``ce``, ``logits_s0.5`` -> ``ce_s0.5``,
    ``aux_logits`` -> ``aux_ce``."""
    return output.replace("logits", "ce")


def segmentation_loss(outputs: Mapping[str, torch.Tensor], labels: torch.Tensor, *, kind: str = "ce",
                      weights: Optional[Mapping[str, float]] = None,
                      ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """Weighted sum of one loss term per output, the labels nearest-resized to each output's size.

    Args:
        outputs: name -> (B, C, h_i, w_i) logits (e.g. the 4 MSC maps of DeepLab-v2).
        labels: (B, H, W) integer labels with ``ignore_index``.
        kind: ``"ce"`` or ``"balanced_ce"``, applied to every output.
        weights: name -> weight; outputs not named weigh 1 (torchvision's aux head: 0.5).
        ignore_index: the ignore label.

    Returns:
        ``{"loss": weighted sum, term_name(name): detached unweighted term, ...}``.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown segmentation loss {kind!r}: expected one of {', '.join(LOSSES)}")
    if not outputs:
        raise ValueError("segmentation_loss: no outputs")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(outputs))
    if unknown:
        raise ValueError(f"segmentation_loss: weights for unknown outputs {unknown}")
    check_logits_and_labels(next(iter(outputs.values())), labels, ignore_index)
    loss_fn = LOSSES[kind]
    total, terms = None, {}
    for name, logits in outputs.items():
        term = loss_fn(logits, resize_labels(labels, logits.shape[-2:]), ignore_index)
        weighted = term * float(weights.get(name, 1.0))
        total = weighted if total is None else total + weighted
        terms[term_name(name)] = term.detach()
    return {"loss": total, **terms}
