"""AffinityNet maths (PSA): pixel pairs within a radius, pair labels from the la/ha CRF labels, the affinity of
two feature vectors and the affinity loss.

Pairs live on the stride-8 grid. For a radius ``r`` the offsets are ``(0, 1) .. (0, r-1)`` followed by every
``(dy, dx)`` with ``1 <= dy < r``, ``|dx| < r`` and ``dy**2 + dx**2 < r**2``: a half-disc, so every unordered
pair is counted once (34 offsets for ``r = 5``). Only the *source* pixels whose partners all lie inside the map
take part: rows ``[0, h - (r-1))`` and columns ``[r-1, w - (r-1))``. Every per-pair tensor here is laid out as
``(..., P, h', w')``, with ``P`` offsets (in the order above) and ``(h', w') = (h - r + 1, w - 2r + 2)`` sources;
flattening the last two dimensions gives the reference's ``(P, h'*w')`` layout.

Example:
    >>> feats = torch.rand(2, 448, 56, 56)
    >>> feature_affinity(feats).shape        # (B, P, h', w') = (2, 34, 52, 48)
    torch.Size([2, 34, 52, 48])
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Union

import numpy as np
import torch

from wsss.ops import IGNORE_INDEX

RADIUS = 5  # PSA's pair radius on the stride-8 grid
STRIDE = 8  # the grid on which affinities and their labels live
EPS = 1e-5  # the reference's guard inside log() and on the pair counts

ArrayLike = Union[np.ndarray, torch.Tensor]


@lru_cache(maxsize=None)
def pair_offsets(radius: int = RADIUS) -> tuple[tuple[int, int], ...]:
    """The ``(dy, dx)`` pair offsets of a half-disc of ``radius``, in the reference order (34 for radius 5)."""
    if radius < 2:
        raise ValueError(f"radius must be >= 2, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [(dy, dx) for dy in range(1, radius) for dx in range(1 - radius, radius)
                if dy * dy + dx * dx < radius * radius]
    return tuple(offsets)


def source_size(h: int, w: int, radius: int = RADIUS) -> tuple[int, int]:
    """``(h', w')``: how many source pixels an ``h x w`` grid has for ``radius`` (ValueError if none)."""
    hs, ws = h - (radius - 1), w - 2 * (radius - 1)
    if hs < 1 or ws < 1:
        raise ValueError(f"a {h}x{w} grid is too small for pair radius {radius}: it needs at least "
                         f"{radius} rows and {2 * radius - 1} columns")
    return hs, ws


def _pair_windows(h: int, w: int, radius: int):
    """(source slices, [target slices per offset]) into the last two dimensions of an ``h x w`` map."""
    hs, ws = source_size(h, w, radius)
    r1 = radius - 1
    source = (slice(0, hs), slice(r1, r1 + ws))
    targets = [(slice(dy, dy + hs), slice(r1 + dx, r1 + dx + ws)) for dy, dx in pair_offsets(radius)]
    return source, targets


def pair_targets(x: torch.Tensor, radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """The source and target values of every pair of a map.

    Args:
        x: ``(..., h, w)``.
    Returns:
        ``source (..., 1, h', w')`` and ``targets (..., P, h', w')``: ``targets[..., p, i, j]`` is the partner of
        ``source[..., 0, i, j]`` at offset ``pair_offsets(radius)[p]``.
    """
    source, targets = _pair_windows(x.shape[-2], x.shape[-1], radius)
    src = x[(..., *source)].unsqueeze(-3)
    tgt = torch.stack([x[(..., *t)] for t in targets], dim=-3)
    return src, tgt


def pair_index(h: int, w: int, radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (into ``h * w``) of the pairs: ``source (h'*w',)`` and ``targets (P, h'*w')``, int64."""
    flat = torch.arange(h * w, dtype=torch.int64).reshape(h, w)
    src, tgt = pair_targets(flat, radius)
    return src.reshape(-1), tgt.reshape(tgt.shape[0], -1)


def feature_affinity(features: torch.Tensor, radius: int = RADIUS) -> torch.Tensor:
    """AffinityNet's affinity ``a_ij = exp(-mean_c |f_i - f_j|)`` over all pairs within ``radius``.

    Args:
        features: ``(B, D, h, w)`` feature map (stride 8).
    Returns:
        ``(B, P, h', w')`` affinities in ``(0, 1]``; differentiable.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, D, h, w), got shape {tuple(features.shape)}")
    source, targets = _pair_windows(features.shape[-2], features.shape[-1], radius)
    src = features[(..., *source)]
    # One offset at a time: (B, D, h', w') per step instead of the reference's (B, D, P, h'*w') at once.
    dist = [(features[(..., *t)] - src).abs().mean(dim=1) for t in targets]
    return torch.exp(-torch.stack(dist, dim=1))


def downsample_labels(labels: ArrayLike, stride: int = STRIDE) -> torch.Tensor:
    """Labels on the stride grid: each ``stride x stride`` block takes its most frequent label.

    This is the reference's ``AvgPool2d(stride)`` + argmax applied to one-hot labels: ``IGNORE_INDEX`` pixels
    (e.g. crop padding) count for nothing, a block with no other pixel becomes ``IGNORE_INDEX``, ties go to the
    smaller label (argmax takes the first), and a partial block at the bottom/right edge votes with what it has.

    Args:
        labels: ``(H, W)`` integer labels in ``[0, 255]``.
    Returns:
        ``(ceil(H/stride), ceil(W/stride))`` int64.
    """
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 2 or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be an integer (H, W) map, got {labels.dtype} shape {tuple(labels.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    H, W = labels.shape
    h, w = -(-H // stride), -(-W // stride)
    padded = torch.full((h * stride, w * stride), IGNORE_INDEX, dtype=torch.int64, device=labels.device)
    padded[:H, :W] = labels.to(torch.int64)
    values, compact = torch.unique(padded, sorted=True, return_inverse=True)
    counts = torch.nn.functional.one_hot(compact, len(values)).reshape(h, stride, w, stride, -1).sum(dim=(1, 3))
    valid = values != IGNORE_INDEX
    counts[..., ~valid] = -1  # ignore never wins against a real label
    out = values[counts.argmax(dim=-1)]
    out[(counts[..., valid] <= 0).all(dim=-1)] = IGNORE_INDEX
    return out


def affinity_label_map(la: ArrayLike, ha: ArrayLike, stride: int = STRIDE) -> torch.Tensor:
    """PSA's combined label map on the stride grid from the low- and high-alpha CRF labels.

    Foreground comes from the low alpha (confident foreground), background from the high alpha (confident
    background); where low alpha says background but high alpha does not, and in blocks with no labelled pixel
    (crop padding), the result is ``IGNORE_INDEX``.

    Args:
        la, ha: ``(H, W)`` integer labels (0 = background, 255 = ignore) of the same image and crop.
    Returns:
        ``(ceil(H/stride), ceil(W/stride))`` int64.
    """
    la_shape, ha_shape = (tuple(x.shape) if hasattr(x, "shape") else np.shape(x) for x in (la, ha))
    if la_shape != ha_shape:
        raise ValueError(f"la and ha label maps differ in shape: {la_shape} vs {ha_shape}")
    la_small, ha_small = downsample_labels(la, stride), downsample_labels(ha, stride)
    out = la_small.clone()
    out[la_small == 0] = IGNORE_INDEX
    out[ha_small == 0] = 0
    return out


def pair_labels(label_map: torch.Tensor, radius: int = RADIUS) -> dict[str, torch.Tensor]:
    """Pair labels from a label map: same label -> positive (background or foreground), different -> negative.

    Args:
        label_map: ``(..., h, w)`` integer labels, ``IGNORE_INDEX`` = no label.
    Returns:
        ``{"bg_pos", "fg_pos", "neg"}``, each ``(..., P, h', w')`` float32 in {0, 1}. A pair with an ignored end is
        in none of them.
    """
    src, tgt = pair_targets(label_map, radius)
    valid = (src != IGNORE_INDEX) & (tgt != IGNORE_INDEX)
    same = src == tgt
    return {"bg_pos": (same & (src == 0)).float(),
            "fg_pos": (same & (src != 0) & valid).float(),
            "neg": (~same & valid).float()}


def affinity_loss(aff: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The AffinityNet loss as the reference code computes it: ``bg/4 + fg/4 + neg/2``.

    Each term is a mean over its own pairs of the whole batch: ``bg = -sum(bg_pos * log(a + 1e-5)) /
    (sum(bg_pos) + 1e-5)``, the same for ``fg``, and ``neg = -sum(neg * log(1 + 1e-5 - a)) / (sum(neg) + 1e-5)``.
    (The often-quoted ``bg/2 + fg/2 + neg`` is twice this, which matters under SGD.)

    Args:
        aff: ``(B, P, h', w')`` affinities in ``(0, 1]``.
        labels: ``bg_pos``, ``fg_pos``, ``neg``, each shaped like ``aff``.
    Returns:
        ``{"loss", "bg", "fg", "neg"}`` scalar tensors.
    """
    missing = {"bg_pos", "fg_pos", "neg"} - set(labels)
    if missing:
        raise ValueError(f"labels lack {sorted(missing)} (expected bg_pos, fg_pos, neg)")
    for name in ("bg_pos", "fg_pos", "neg"):
        if labels[name].shape != aff.shape:
            raise ValueError(f"labels[{name!r}] has shape {tuple(labels[name].shape)}, "
                             f"expected the affinity shape {tuple(aff.shape)}")
    pos_log = torch.log(aff + EPS)
    neg_log = torch.log(1.0 + EPS - aff)

    def mean_over(mask: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        mask = mask.to(aff.dtype)
        return -(mask * log_prob).sum() / (mask.sum() + EPS)

    bg, fg = mean_over(labels["bg_pos"], pos_log), mean_over(labels["fg_pos"], pos_log)
    neg = mean_over(labels["neg"], neg_log)
    return {"loss": bg / 4 + fg / 4 + neg / 2, "bg": bg, "fg": fg, "neg": neg}
