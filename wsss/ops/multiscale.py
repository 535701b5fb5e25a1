"""Multi-scale, flipped CAM inference maths (PSA ``infer_cls.py``), as plain functions.

For each scale ``s`` the image is resized to ``(round(W s), round(H s))`` (bicubic) and fed with its horizontal
flip. Each class map (ReLU already applied, stride 8) is upsampled bilinearly straight to the full ``H x W``,
multiplied by the image-label mask, flipped back, and all of them are **summed**; each class is then divided by
its maximum (+1e-5), giving values in [0, 1).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def scaled_images(image: np.ndarray, scales: Sequence[float]) -> list[np.ndarray]:
    """Resize a uint8 (H, W, 3) image to each scale with PIL bicubic, sizes ``round(W s) x round(H s)``."""
    h, w = image.shape[:2]
    out = []
    for s in scales:
        if s <= 0:
            raise ValueError(f"every scale must be > 0, got {s}")
        size = (max(1, round(w * s)), max(1, round(h * s)))
        out.append(image if size == (w, h) else np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC)))
    return out


def fuse_cams(maps: Sequence[torch.Tensor], flipped: Sequence[bool], size: tuple[int, int],
              label_mask: torch.Tensor) -> torch.Tensor:
    """Sum class maps of several inputs at full size.

    Args:
        maps: each (C, h_i, w_i), non-negative class maps of one input (scale and flip).
        flipped: whether each input was the horizontally flipped image.
        size: (H, W) of the original image.
        label_mask: (C,) 1 for the classes in the image label, 0 elsewhere.

    Returns:
        (C, H, W) sum over inputs of the upsampled, masked, un-flipped maps.
    """
    if len(maps) != len(flipped) or not maps:
        raise ValueError(f"need one flip flag per map and at least one map, got {len(maps)} and {len(flipped)}")
    total = None
    for m, flip in zip(maps, flipped):
        if m.ndim != 3 or m.shape[0] != label_mask.shape[0]:
            raise ValueError(f"maps must be (C={label_mask.shape[0]}, h, w), got {tuple(m.shape)}")
        up = F.interpolate(m[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        up = up * label_mask.to(up)[:, None, None]
        if flip:
            up = up.flip(-1)
        total = up if total is None else total + up
    return total


def normalize_cams(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each class map by its maximum plus ``eps``: (C, H, W) -> values in [0, 1)."""
    return cams / (cams.flatten(1).amax(dim=1)[:, None, None] + eps)


def scaled_inputs(image: np.ndarray, normalization, scales: Sequence[float], flip: bool) -> list[torch.Tensor]:
    """The network inputs of one image, one per scale: the resized image (:func:`scaled_images`) normalised,
    (1, 3, h_s, w_s) float32, or with ``flip`` (2, 3, h_s, w_s), its horizontal flip as the second row.

    Args:
        normalization: anything with ``apply(uint8 (H, W, 3)) -> (3, H, W)`` (the backbone's normalisation).
    """
    inputs = []
    for scaled in scaled_images(image, scales):
        x = torch.as_tensor(normalization.apply(scaled))[None].float()
        inputs.append(torch.cat([x, x.flip(-1)]) if flip else x)
    return inputs


def fuse_scale_outputs(outputs: Iterable[torch.Tensor], flip: bool, size: tuple[int, int],
                       label_mask: torch.Tensor) -> torch.Tensor:
    """:func:`fuse_cams` of per-scale network outputs, each (1, C, h_s, w_s), or (2, C, h_s, w_s) with ``flip``
    (the second row from the flipped input, as :func:`scaled_inputs` stacks them): (C, H, W)."""
    maps, flipped = [], []
    for out in outputs:
        maps += list(out)
        flipped += [False, True] if flip else [False]
    return fuse_cams(maps, flipped, size, label_mask)
