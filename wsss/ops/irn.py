"""IRN's inter-pixel relation maths: pair labels, the affinity and displacement losses, the boundary-aware random
walk and the semantic labels it gives.

Training (on the stride-4 grid of a 512 crop, radius 10): the IR label is sampled at pixel ``4i + 2``
(:func:`downsample_ir_label`), pairs get labels bg_pos / fg_pos / neg (:func:`irn_pair_labels`), the boundary map
gives pair affinities (:func:`wsss.ops.path_index.boundary_affinity`) and the displacement field ``D`` (channel 0
rows, channel 1 columns, pointing from a pixel to its instance centroid) gives pair differences
(:func:`pair_displacements`); :func:`irn_losses` combines them exactly as IRN does, ``1e-5`` guards included.

CAMs (``make_cam``): :func:`fuse_cams_irn` sums the per-scale class maps into the full-size ``high_res`` CAM and
the stride-4 ``cam`` that the walk starts from.

Inference (radius 5): :func:`propagate_boundaries` walks the stride-4 CAMs through
:func:`wsss.ops.random_walk.random_walk` with ``beta`` 10 and ``logt`` 8 on IRN's affinities, and
:func:`semantic_labels` upsamples, normalises by the global max and adds the constant background 0.25.

Example:
    >>> walked = propagate_boundaries(cams_s4, boundary)            # (K, h, w), (h, w) -> (K, h, w)
    >>> labels = semantic_labels(walked, classes, (375, 500))        # (375, 500) uint8 in 0..C
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.ops.affinity import EPS, pair_labels, pair_targets
from wsss.ops.crf import labels_from_scores
from wsss.ops.multiscale import normalize_cams
from wsss.ops.path_index import (INFER_RADIUS, TRAIN_RADIUS, boundary_affinity, irn_directions, irn_to_psa_order,
                                 psa_to_irn_order)
from wsss.ops.random_walk import random_walk, random_walk_dense

LABEL_STRIDE = 4       # IRN's boundary / displacement grid
BETA, LOGT = 10, 8     # make_sem_seg_labels: beta, exp_times (2 ** 8 = 256 steps)
SEM_THRESHOLD = 0.25   # sem_seg_bg_thres: constant background after the global max
CAM_STRIDE = 16        # make_cam: high_res is upsampled to the size rounded up to this stride, then cropped
PAIR_KEYS = ("bg_pos", "fg_pos", "neg")


def downsample_ir_label(label: torch.Tensor, stride: int = LABEL_STRIDE) -> torch.Tensor:
    """IRN's label reduction (PIL NEAREST by ``1/stride``): pixel ``stride * i + stride // 2``.

    Args:
        label: ``(..., H, W)`` integer labels, ``H`` and ``W`` multiples of ``stride`` (IRN: a 512 crop).
    Returns:
        ``(..., H / stride, W / stride)``, same dtype (512 -> 128 samples pixels 2, 6, ..., 510).
    """
    if label.ndim < 2 or label.is_floating_point():
        raise ValueError(f"label must be an integer (..., H, W) map, got {label.dtype} shape {tuple(label.shape)}")
    if stride < 1 or label.shape[-2] % stride or label.shape[-1] % stride:
        raise ValueError(f"label size {tuple(label.shape[-2:])} is not a multiple of the stride {stride}")
    return label[..., stride // 2::stride, stride // 2::stride]


def irn_pair_labels(label: torch.Tensor, radius: int = TRAIN_RADIUS) -> dict[str, torch.Tensor]:
    """IRN's pair labels of a stride-4 label map, directions in IRN's order.

    Valid pairs have both ends labelled (not ``IGNORE_INDEX``); bg_pos: both background, fg_pos: both the same
    foreground class (instances are not told apart), neg: different labels.

    Args:
        label: ``(..., h, w)`` integer labels, 0 = background, ``IGNORE_INDEX`` (255) = no label.
    Returns:
        ``{"bg_pos", "fg_pos", "neg"}``, each ``(..., P, h - radius + 1, w - 2 * radius + 2)`` float32 in {0, 1}.
    """
    if label.ndim < 2 or label.is_floating_point():
        raise ValueError(f"label must be an integer (..., h, w) map, got {label.dtype} shape {tuple(label.shape)}")
    order = psa_to_irn_order(radius).to(label.device)
    return {k: v.index_select(-3, order) for k, v in pair_labels(label, radius).items()}


def pair_displacements(disp: torch.Tensor, radius: int = TRAIN_RADIUS) -> torch.Tensor:
    """``D(i) - D(j)`` for every pair ``j = i + d``, directions in IRN's order.

    Args:
        disp: ``(B, 2, h, w)`` displacement field (channel 0 = rows, 1 = columns, in grid pixels).
    Returns:
        ``(B, 2, P, h', w')``; differentiable.
    """
    if disp.ndim != 4 or disp.shape[1] != 2:
        raise ValueError(f"disp must be (B, 2, h, w), got shape {tuple(disp.shape)}")
    src, tgt = pair_targets(disp, radius)
    return (src - tgt).index_select(2, psa_to_irn_order(radius).to(disp.device))


def direction_targets(radius: int = TRAIN_RADIUS, dtype=torch.float32, device=None) -> torch.Tensor:
    """IRN's ``disp_target``: the directions ``(dy, dx)`` laid out as ``(1, 2, P, 1, 1)``."""
    d = torch.tensor(irn_directions(radius), dtype=dtype, device=device)  # (P, 2)
    return d.t()[None, :, :, None, None]


def _check_losses(aff: torch.Tensor, disp: torch.Tensor, labels: Mapping[str, torch.Tensor], radius: int) -> None:
    missing = set(PAIR_KEYS) - set(labels)
    if missing:
        raise ValueError(f"labels lack {sorted(missing)} (expected {', '.join(PAIR_KEYS)})")
    if aff.ndim != 4 or aff.shape[1] != len(irn_directions(radius)):
        raise ValueError(f"aff has shape {tuple(aff.shape)}, expected (B, {len(irn_directions(radius))}, h', w') "
                         f"for radius {radius}")
    for name in PAIR_KEYS:
        if labels[name].shape != aff.shape:
            raise ValueError(f"labels[{name!r}] has shape {tuple(labels[name].shape)}, expected {tuple(aff.shape)}")
    if disp.ndim != 4 or disp.shape[0] != aff.shape[0]:
        raise ValueError(f"disp has shape {tuple(disp.shape)}, expected ({aff.shape[0]}, 2, h, w)")


def irn_losses(aff: torch.Tensor, disp: torch.Tensor, labels: Mapping[str, torch.Tensor],
               radius: int = TRAIN_RADIUS) -> dict[str, torch.Tensor]:
    """IRN's training loss, sums over the whole batch, with the reference's ``1e-5`` placement.

    ``pos_aff = (S(bg_pos * L+) / (S(bg_pos) + 1e-5) + S(fg_pos * L+) / (S(fg_pos) + 1e-5)) / 2`` with
    ``L+ = -log(a + 1e-5)``; ``neg_aff = S(neg * L-) / (S(neg) + 1e-5)`` with ``L- = -log(1 + 1e-5 - a)``;
    ``dp_fg = S(fg_pos * |D(i) - D(j) - d|) / (2 S(fg_pos) + 1e-5)`` and ``dp_bg = S(bg_pos * |D(i) - D(j)|) /
    (2 S(bg_pos) + 1e-5)``, summed over both channels; ``loss = (pos_aff + neg_aff) / 2 + (dp_fg + dp_bg) / 2``.

    Args:
        aff: ``(B, P, h', w')`` pair affinities in ``[0, 1]`` (:func:`boundary_affinity`).
        disp: ``(B, 2, h, w)`` displacement field.
        labels: ``bg_pos``, ``fg_pos``, ``neg`` shaped like ``aff`` (:func:`irn_pair_labels`).
        radius: the pair radius of ``aff`` and ``labels``.
    Returns:
        ``{"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg"}`` scalar tensors.
    """
    _check_losses(aff, disp, labels, radius)
    bg, fg, neg = (labels[k].to(aff.dtype) for k in PAIR_KEYS)
    pos_log, neg_log = -torch.log(aff + EPS), -torch.log(1.0 + EPS - aff)
    pos_aff = ((bg * pos_log).sum() / (bg.sum() + EPS) + (fg * pos_log).sum() / (fg.sum() + EPS)) / 2
    neg_aff = (neg * neg_log).sum() / (neg.sum() + EPS)
    delta = pair_displacements(disp, radius)
    target = direction_targets(radius, delta.dtype, delta.device)
    dp_fg = ((delta - target).abs() * fg[:, None]).sum() / (2 * fg.sum() + EPS)
    dp_bg = (delta.abs() * bg[:, None]).sum() / (2 * bg.sum() + EPS)
    return {"loss": (pos_aff + neg_aff) / 2 + (dp_fg + dp_bg) / 2, "pos_aff": pos_aff, "neg_aff": neg_aff,
            "dp_fg": dp_fg, "dp_bg": dp_bg}


def fuse_cams_irn(maps: Sequence[torch.Tensor], size: tuple[int, int],
                  stride: int = CAM_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's ``make_cam`` fusion of multi-scale class maps into its two CAMs, each row max-normalised (+1e-5).

    ``high_res``: every map upsampled bilinearly to ``stride * ceil(H / stride)`` by ``stride * ceil(W / stride)``,
    summed, the top-left ``H x W`` kept. ``stride4``: every map resized straight to ``(ceil(H / 4), ceil(W / 4))``
    (a stretch, not a crop), summed. Both use ``align_corners=False``; they are not resamplings of each other.

    Args:
        maps: per scale ``(C, h_s, w_s)`` non-negative class maps (IRN: the map of the image plus the flipped-back
            map of its flip).
        size: ``(H, W)`` of the image.
    Returns:
        ``(high_res (C, H, W), stride4 (C, ceil(H / 4), ceil(W / 4)))``, float32 in ``[0, 1)``.
    """
    if not maps or any(m.ndim != 3 or m.shape[0] != maps[0].shape[0] for m in maps):
        raise ValueError(f"maps must be one or more (C, h, w) tensors, got {[tuple(m.shape) for m in maps]}")
    height, width = size
    up = (stride * -(-height // stride), stride * -(-width // stride))
    small = (-(-height // LABEL_STRIDE), -(-width // LABEL_STRIDE))

    def resized(m: torch.Tensor, to: tuple[int, int]) -> torch.Tensor:
        if not len(m):  # an image without classes
            return m.new_zeros(0, *to, dtype=torch.float32)
        return F.interpolate(m[None].float(), size=to, mode="bilinear", align_corners=False)[0]

    high_res = sum(resized(m, up)[:, :height, :width] for m in maps)
    stride4 = sum(resized(m, small) for m in maps)
    return normalize_cams(high_res), normalize_cams(stride4)


def flip_averaged_boundary(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """IRN's inference boundary from the logits of ``[image, flipped image]``: crop both to ``size``, then
    ``sigmoid((B(image) + flip(B(flipped))) / 2)`` (averaged in logit space).

    Args:
        logits: ``(2, 1, h_pad, w_pad)`` or ``(2, h_pad, w_pad)`` boundary logits of the padded pair.
        size: ``(h, w)`` of the unpadded image's stride-4 grid, ``ceil(H / 4), ceil(W / 4)``.
    Returns:
        ``(h, w)`` boundary probabilities in ``[0, 1]``.
    """
    logits = logits.reshape(logits.shape[0], *logits.shape[-2:]) if logits.ndim == 4 else logits
    if logits.ndim != 3 or logits.shape[0] != 2:
        raise ValueError(f"logits must be those of [image, flipped image], (2, [1,] h, w), got {tuple(logits.shape)}")
    h, w = size
    crop = logits[:, :h, :w]
    return torch.sigmoid(crop[0] / 2 + crop[1].flip(-1) / 2)


def propagate_boundaries(cams: torch.Tensor, boundary: torch.Tensor, radius: int = INFER_RADIUS,
                         beta: float = BETA, logt: int = LOGT, dense: bool = False) -> torch.Tensor:
    """IRN's semantic random walk (``propagate_to_edge``) through our sparse :func:`random_walk`.

    The boundary is padded with 1 by ``radius`` on the left, right and bottom (pairs leaving the image get
    affinity 0, so the walk equals IRN's on the cropped graph); the affinities (:func:`boundary_affinity`) are
    permuted into :func:`pair_offsets` order; the scores ``cams * (1 - boundary)``, padded with 0, walk
    ``2 ** logt`` steps on ``W = A ** beta``; the result is cropped back. The background is not walked.

    Args:
        cams: ``(K, h, w)`` stride-4 CAMs (IRN's ``cam``, each row max-normalised), ``K >= 0``.
        boundary: ``(h, w)`` boundary probabilities in ``[0, 1]`` (:func:`flip_averaged_boundary`).
        radius, beta, logt: IRN: 5, 10, 8.
        dense: use the dense reference formulation (O(N^2) memory; for comparison).
    Returns:
        ``(K, h, w)`` walked scores.
    """
    if cams.ndim != 3 or boundary.ndim != 2 or cams.shape[1:] != boundary.shape:
        raise ValueError(f"expected cams (K, h, w) and boundary (h, w) on one grid, got {tuple(cams.shape)} and "
                         f"{tuple(boundary.shape)}")
    h, w = boundary.shape
    pad = (radius, radius, 0, radius)  # left, right, top, bottom
    padded_b = F.pad(boundary[None], pad, value=1.0)
    aff = boundary_affinity(padded_b, radius)[0].index_select(0, irn_to_psa_order(radius).to(boundary.device))
    scores = F.pad((cams * (1 - boundary)).to(aff.dtype), pad, value=0.0)
    walk = random_walk_dense if dense else random_walk
    walked = walk(scores, aff, beta, logt, radius)
    return walked[:, :h, radius:radius + w]


def semantic_labels(walked: torch.Tensor, classes, image_size: tuple[int, int],
                    threshold: float = SEM_THRESHOLD) -> np.ndarray:
    """IRN's semantic pseudo label from walked stride-4 scores.

    Upsample x4 (bilinear, ``align_corners=False``), crop to the image, divide by the *global* max over classes
    and pixels, put a constant background ``threshold`` in front, argmax (ties: background), map to labels.
    Departure: where the walk is all zero (or ``K = 0``) IRN divides by 0 and its NaNs win the argmax; here the
    whole image is background.

    Args:
        walked: ``(K, h, w)`` from :func:`propagate_boundaries`.
        classes: ``(K,)`` 0-based foreground classes of the rows.
        image_size: ``(H, W)``, with ``ceil(H / 4) == h`` and ``ceil(W / 4) == w``.
        threshold: background score, IRN 0.25.
    Returns:
        ``(H, W)`` uint8: 0 = background, ``classes[k] + 1``.
    """
    height, width = image_size
    if walked.ndim != 3 or tuple(walked.shape[1:]) != (-(-height // 4), -(-width // 4)):
        raise ValueError(f"walked scores {tuple(walked.shape)} are not the stride-4 grid of a {height}x{width} "
                         f"image")
    up = walked.new_zeros(0, height, width)
    if len(walked):
        up = F.interpolate(walked[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :height, :width]
        peak = up.max()
        up = up / peak if peak > 0 else torch.zeros_like(up)
    scores = torch.cat([walked.new_full((1, height, width), float(threshold)), up])
    return labels_from_scores(scores, np.asarray(classes, dtype=np.int64))
