"""Self-supervision of the single-stage network: pseudo ground truth from refined masks and its balanced loss.

Pseudo ground truth (per image, per class ``c`` with ``M_c`` the largest value of mask ``c``): a pixel is positive
for ``c`` when its mask value is strictly above ``max(ratio_c * M_c, floor)``, with ratio 0.7 for the background
(channel 0), 0.6 for the classes, floor 0.2. Pixels positive for several classes are ambiguous and become all-zero,
as are pixels positive for none; the loss ignores both.

Example:
    >>> masks = torch.softmax(torch.randn(2, 21, 32, 32), 1)
    >>> labels = torch.zeros(2, 20); labels[:, 3] = 1
    >>> gt = pseudo_gt_from_masks(clean_masks(masks, labels))       # (2, 21, 32, 32) in {0, 1}
    >>> balanced_mask_loss(torch.randn(2, 21, 8, 8), gt, labels).shape
    torch.Size([2])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.ops import IGNORE_INDEX

BG_RATIO = 0.7
FG_RATIO = 0.6
FLOOR = 0.2


def _check_labels(masks: torch.Tensor, labels: torch.Tensor) -> None:
    if masks.ndim != 4 or labels.ndim != 2 or labels.shape != (masks.shape[0], masks.shape[1] - 1):
        raise ValueError(f"expected masks (B, K, H, W) with background first and labels (B, K-1), got "
                         f"{tuple(masks.shape)} and {tuple(labels.shape)}")


def clean_masks(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Zero the foreground channels of classes absent from the image label; the background is kept.

    Args:
        masks: (B, K, H, W), background first.
        labels: (B, K - 1) 0/1 image labels.

    Returns:
        (B, K, H, W) new tensor.
    """
    _check_labels(masks, labels)
    keep = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).to(masks.dtype)
    return masks * keep[:, :, None, None]


def pseudo_gt_from_masks(masks: torch.Tensor, fg_ratio: float = FG_RATIO, bg_ratio: float = BG_RATIO,
                         floor: float = FLOOR) -> torch.Tensor:
    """Binary pseudo ground truth from (refined, cleaned) masks.

    Args:
        masks: (B, K, H, W) scores in [0, 1], channel 0 = background.
        fg_ratio: threshold fraction of each class's maximum (0.6).
        bg_ratio: threshold fraction of the background's maximum (0.7).
        floor: lowest threshold (0.2).

    Returns:
        (B, K, H, W) float in {0, 1}, at most one 1 per pixel; all-zero pixels are "no label". Detached.
    """
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, K, H, W), got shape {tuple(masks.shape)}")
    masks = masks.detach()
    peak = masks.flatten(2).amax(-1)  # (B, K)
    ratios = torch.full_like(peak[:1], fg_ratio)
    ratios[:, 0] = bg_ratio
    thresholds = (peak * ratios).clamp_min(floor)
    positive = masks > thresholds[:, :, None, None]
    unique = positive.sum(1, keepdim=True) == 1
    return (positive & unique).to(masks.dtype)


def pseudo_gt_to_index(pseudo_gt: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, K, H, W) binary pseudo ground truth -> (B, H, W) int64 class indices, ``ignore_index`` where none."""
    index = pseudo_gt.argmax(1)
    index[pseudo_gt.sum(1) < 1] = ignore_index
    return index


def balanced_mask_loss(logits: torch.Tensor, pseudo_gt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy on the pseudo ground truth, one value per image.

    The logits are upsampled (bilinear, align_corners=True) to the pseudo-GT size. A pixel of class ``c`` has
    weight ``(N - n_c) / (1 + N)`` (``n_c`` its class's pixel count, ``N`` the labelled pixel count); unlabelled
    pixels weigh 0 but still count in the mean over all H * W pixels. An image's loss is zeroed unless its pseudo
    GT holds exactly as many classes as its image label plus the background.

    Args:
        logits: (B, K, h, w) mask logits, background first.
        pseudo_gt: (B, K, H, W) from :func:`pseudo_gt_from_masks`.
        labels: (B, K - 1) 0/1 image labels.

    Returns:
        (B,) per-image losses.
    """
    _check_labels(pseudo_gt, labels)
    if logits.ndim != 4 or logits.shape[:2] != pseudo_gt.shape[:2]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match pseudo_gt {tuple(pseudo_gt.shape)}")
    logits = F.interpolate(logits, size=pseudo_gt.shape[-2:], mode="bilinear", align_corners=True)
    target = pseudo_gt_to_index(pseudo_gt)
    pixels_per_class = pseudo_gt.flatten(2).sum(-1)  # (B, K)
    total = pixels_per_class.sum(-1, keepdim=True)
    class_weight = (total - pixels_per_class) / (1.0 + total)
    pixel_weight = (pseudo_gt * class_weight[:, :, None, None]).sum(1)  # (B, H, W), 0 where unlabelled
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    per_image = (pixel_weight * ce).flatten(1).mean(-1)
    classes_expected = labels.sum(-1).to(per_image.dtype) + 1
    classes_found = (pixels_per_class > 0).sum(-1).to(per_image.dtype)
    return per_image * (classes_expected == classes_found).to(per_image.dtype)
