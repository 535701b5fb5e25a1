"""Pixel-Adaptive Mask Refinement (PAMR, Araslanov & Roth, CVPR 2020).

Each pixel's mask is replaced, ``iterations`` times, by a weighted average of the masks of its neighbours. The
neighbours of pixel ``i`` are ``i + d * o`` for every dilation ``d`` and every offset ``o`` in the 3x3 window except
the centre (8 per dilation; borders clamp to the nearest pixel, i.e. replicate padding). The weights come from the
image once, before the iterations:

    sigma_k(i)  = unbiased std of channel k over the 9 * len(dilations) window values around i (centre included,
                  once per dilation)
    kappa(i, j) = mean_k( -|I_k(i) - I_k(j)| / (1e-8 + 0.1 * sigma_k(i)) )
    alpha(i, .) = softmax of kappa(i, .) over the neighbours j

Example:
    >>> image = torch.rand(1, 3, 32, 32)                      # de-normalised RGB in [0, 1]
    >>> masks = torch.softmax(torch.randn(1, 21, 32, 32), 1)
    >>> pamr(image, masks).shape
    torch.Size([1, 21, 32, 32])
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
DEFAULT_ITERATIONS = 10
TEMPERATURE = 0.1  # the spread multiplier in the affinity logits (hard-coded in the reference)
EPS = 1e-8

# (row, col) offsets of the 3x3 window in row-major order; the neighbours are the window without its centre.
WINDOW_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
NEIGHBOUR_OFFSETS = tuple(o for o in WINDOW_OFFSETS if o != (0, 0))


def _check_dilations(dilations: Sequence[int]) -> tuple[int, ...]:
    dilations = tuple(int(d) for d in dilations)
    if not dilations or any(d < 1 for d in dilations):
        raise ValueError(f"PAMR dilations must be a non-empty list of integers >= 1, got {dilations}")
    return dilations


def _shifted_views(x: torch.Tensor, dilations: Sequence[int], offsets: Sequence[tuple[int, int]]):
    """Yield ``x`` (B, C, H, W) shifted by ``d * o`` for every dilation and offset, borders clamped."""
    pad = max(dilations)
    height, width = x.shape[-2:]
    # Replicate padding is index clamping, so one padding by the largest dilation serves every dilation.
    padded = F.pad(x, [pad] * 4, mode="replicate")
    for d in dilations:
        for dy, dx in offsets:
            top, left = pad + dy * d, pad + dx * d
            yield padded[:, :, top:top + height, left:left + width]


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS) -> torch.Tensor:
    """The neighbour weights of every pixel.

    Args:
        image: (B, C, H, W) float image (the reference uses de-normalised RGB in [0, 1]).
        dilations: neighbourhood dilations.

    Returns:
        (B, 8 * len(dilations), H, W): softmax weights over the neighbours, in the order dilation-major, then
        :data:`NEIGHBOUR_OFFSETS`. Each pixel's weights sum to 1.
    """
    dilations = _check_dilations(dilations)
    window = torch.stack(list(_shifted_views(image, dilations, WINDOW_OFFSETS)), 2)  # (B, C, 9*D, H, W)
    spread = window.std(dim=2, keepdim=True)  # unbiased
    neighbours = torch.stack(list(_shifted_views(image, dilations, NEIGHBOUR_OFFSETS)), 2)  # (B, C, 8*D, H, W)
    logits = -(image.unsqueeze(2) - neighbours).abs() / (EPS + TEMPERATURE * spread)
    return torch.softmax(logits.mean(dim=1), dim=1)


def propagate(masks: torch.Tensor, affinity: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS,
              iterations: int = DEFAULT_ITERATIONS) -> torch.Tensor:
    """Apply ``m(i) <- sum_j affinity(i, j) m(j)`` ``iterations`` times.

    Args:
        masks: (B, K, H, W).
        affinity: (B, 8 * len(dilations), H, W) from :func:`pamr_affinity` with the same dilations.
        dilations: the neighbourhood dilations the affinity was computed with.
        iterations: number of propagation steps (0 returns ``masks`` unchanged).

    Returns:
        (B, K, H, W) propagated masks.
    """
    dilations = _check_dilations(dilations)
    if affinity.shape[1] != 8 * len(dilations) or affinity.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit masks {tuple(masks.shape)} "
                         f"with {len(dilations)} dilations")
    for _ in range(iterations):
        out = torch.zeros_like(masks)
        for p, view in enumerate(_shifted_views(masks, dilations, NEIGHBOUR_OFFSETS)):
            out += affinity[:, p:p + 1] * view
        masks = out
    return masks


def pamr(image: torch.Tensor, masks: torch.Tensor, dilations: Sequence[int] = DEFAULT_DILATIONS,
         iterations: int = DEFAULT_ITERATIONS) -> torch.Tensor:
    """Refine ``masks`` with affinities from ``image``.

    Args:
        image: (B, C, H, W) float image; the reference passes the de-normalised RGB crop in [0, 1], resized to the
            mask resolution.
        masks: (B, K, h, w) masks (e.g. class probabilities); resized bilinearly (align_corners=True) to (H, W)
            first when the sizes differ, as the reference does.
        dilations: neighbourhood dilations (reference: 1, 2, 4, 8, 12, 24).
        iterations: propagation steps (reference: 10); must be >= 0.

    Returns:
        (B, K, H, W) refined masks. Gradients flow through ``masks`` only; the reference passes detached masks.
    """
    if image.ndim != 4 or masks.ndim != 4:
        raise ValueError(f"pamr expects image (B, C, H, W) and masks (B, K, H, W), got {tuple(image.shape)} "
                         f"and {tuple(masks.shape)}")
    if image.shape[0] != masks.shape[0]:
        raise ValueError(f"pamr: image batch {image.shape[0]} != masks batch {masks.shape[0]}")
    if iterations < 0:
        raise ValueError(f"pamr: iterations must be >= 0, got {iterations}")
    if masks.shape[-2:] != image.shape[-2:]:
        masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    affinity = pamr_affinity(image.to(masks.dtype), dilations)
    return propagate(masks, affinity, dilations, iterations)


def difference_kernel() -> torch.Tensor:
    """(8, 1, 3, 3): centre +1 and one neighbour -1 per output, neighbours in :data:`NEIGHBOUR_OFFSETS` order."""
    kernel = torch.zeros(8, 1, 3, 3)
    kernel[:, 0, 1, 1] = 1.0
    for i, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        kernel[i, 0, 1 + dy, 1 + dx] = -1.0
    return kernel


def neighbour_kernel() -> torch.Tensor:
    """(8, 1, 3, 3): copies one neighbour per output, in :data:`NEIGHBOUR_OFFSETS` order."""
    kernel = torch.zeros(8, 1, 3, 3)
    for i, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        kernel[i, 0, 1 + dy, 1 + dx] = 1.0
    return kernel


def window_kernel() -> torch.Tensor:
    """(9, 1, 3, 3): copies one window position per output, row-major, centre included."""
    return torch.eye(9).view(9, 1, 3, 3)


# Buffer name -> builder. The reference stores these fixed kernels in its state dict; we keep them so that its
# checkpoints load strictly, and check that they still hold these values.
KERNEL_BUFFERS = {"difference_kernel": difference_kernel, "neighbour_kernel": neighbour_kernel,
                  "window_kernel": window_kernel}


class PAMR(nn.Module):
    """:func:`pamr` as a module with fixed settings (a thin wrapper; it has no parameters).

    Buffers ``difference_kernel`` (8, 1, 3, 3), ``neighbour_kernel`` (8, 1, 3, 3) and ``window_kernel``
    (9, 1, 3, 3) describe the neighbourhood as the reference's state dict stores it (``_aff.aff_x.kernel``,
    ``_aff.aff_m.kernel``, ``_aff.aff_std.kernel``). They must keep their fixed values: ``load_state_dict`` with
    other values raises ``ValueError`` (the weights loader reports it as the user's file problem).
    """

    def __init__(self, dilations: Sequence[int] = DEFAULT_DILATIONS, iterations: int = DEFAULT_ITERATIONS):
        super().__init__()
        self.dilations = _check_dilations(dilations)
        if iterations < 0:
            raise ValueError(f"PAMR iterations must be >= 0, got {iterations}")
        self.iterations = int(iterations)
        for name, build in KERNEL_BUFFERS.items():
            self.register_buffer(name, build())
        self.register_load_state_dict_post_hook(lambda module, incompatible: module.check_kernels())

    def check_kernels(self) -> None:
        """Raise ``ValueError`` when a kernel buffer no longer holds its fixed value."""
        for name, build in KERNEL_BUFFERS.items():
            buffer = getattr(self, name)
            if buffer.is_meta:  # shapes only (e.g. a key check on the meta device): nothing to compare
                continue
            if not torch.equal(buffer.detach().float().cpu(), build()):
                raise ValueError(f"PAMR buffer '{name}' does not hold the fixed neighbourhood kernel "
                                f"(the loaded weights are not from this network)")

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """image (B, C, H, W), masks (B, K, h, w) -> refined masks (B, K, H, W)."""
        return pamr(image, masks, self.dilations, self.iterations)

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, iterations={self.iterations}"
