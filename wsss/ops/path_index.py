"""IRN's pixel pairs, the paths between them, and class-boundary maps turned into pair affinities.

IRN (``PathIndex``) uses the same half-disc of directions as PSA (:func:`wsss.ops.affinity.pair_offsets`) and the
same source window (rows ``[0, h - r + 1)``, columns ``[r - 1, w - r + 1)``), but in another order: the directions
are regrouped by the length of their path, ascending, keeping the generation order inside a group. Every per-pair
tensor of IRN (pair labels, affinities, displacement targets) is in this order, here written
``(..., P, h', w')`` like the rest of :mod:`wsss.ops`; flattening the last two dimensions gives IRN's
``(..., P, N_src)``. :func:`irn_to_psa_order` permutes it into :func:`pair_offsets` order (what
:func:`wsss.ops.random_walk.random_walk` takes).

The path of a direction ``d = (dy, dx)`` holds every integer point of the bounding box of the segment ``0 -> d``
whose squared distance to the line through ``0`` and ``d`` is below 1, both endpoints included, sorted by
decreasing ``|y| + |x|`` (the first point is ``d``). The affinity of a pair is ``1 - max`` of the boundary map
over its path (:func:`boundary_affinity`); a pixel on a boundary thus has affinity ~0 with everyone.

Example:
    >>> irn_directions(5)[:6]
    ((0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (1, -1))
    >>> boundary_affinity(torch.rand(2, 16, 16), radius=5).shape      # (B, P, h - 4, w - 8)
    torch.Size([2, 34, 12, 8])
"""
from __future__ import annotations

from functools import lru_cache

import torch

from wsss.ops.affinity import pair_offsets, source_size

TRAIN_RADIUS = 10  # IRN's radius on the 128x128 training grid (train_irn.py)
INFER_RADIUS = 5   # IRN's radius of the semantic random walk (make_sem_seg_labels.py)

Point = tuple[int, int]


def _path(dy: int, dx: int) -> tuple[Point, ...]:
    """The path points of direction ``(dy, dx)``, first ``d`` itself, last ``(0, 0)``."""
    norm = dy * dy + dx * dx
    points = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
              if (dy * x - dx * y) ** 2 < norm]
    return tuple(sorted(points, key=lambda p: -(abs(p[0]) + abs(p[1]))))  # stable: ties keep the scan order


@lru_cache(maxsize=None)
def direction_paths(radius: int) -> tuple[tuple[Point, tuple[Point, ...]], ...]:
    """``(direction, path)`` for every direction of ``radius``, in IRN's order (by path length, stable).

    Args:
        radius: integer pair radius, >= 2 (IRN: 10 in training, 5 at inference).
    Returns:
        ``P`` pairs ``((dy, dx), ((y, x), ...))``; 34 for radius 5, 152 for radius 10.
    """
    if isinstance(radius, bool) or int(radius) != radius:
        raise ValueError(f"radius must be an integer, got {radius!r}")
    generated = [(d, _path(*d)) for d in pair_offsets(int(radius))]
    return tuple(sorted(generated, key=lambda item: len(item[1])))  # sorted() is stable


def irn_directions(radius: int) -> tuple[Point, ...]:
    """The ``(dy, dx)`` directions in IRN's order (the layout of every IRN per-pair tensor)."""
    return tuple(d for d, _ in direction_paths(radius))


def path_groups(radius: int) -> tuple[tuple[int, int], ...]:
    """``(path length, number of directions)`` per length group, ascending: IRN's ``path_indices{g}`` are
    ``(count, length, N_src)``. Radius 5: ``(2, 2), (3, 2), (4, 4), ...``."""
    groups: dict[int, int] = {}
    for _, path in direction_paths(radius):
        groups[len(path)] = groups.get(len(path), 0) + 1
    return tuple(groups.items())


def irn_to_psa_order(radius: int) -> torch.Tensor:
    """Index ``perm`` (P,) int64 with ``x_psa = x_irn[..., perm, :, :]`` in :func:`pair_offsets` order."""
    position = {d: i for i, d in enumerate(irn_directions(radius))}
    return torch.tensor([position[d] for d in pair_offsets(radius)], dtype=torch.int64)


def psa_to_irn_order(radius: int) -> torch.Tensor:
    """Index ``perm`` (P,) int64 with ``x_irn = x_psa[..., perm, :, :]`` (the inverse of :func:`irn_to_psa_order`)."""
    return torch.argsort(irn_to_psa_order(radius))


def _window(x: torch.Tensor, point: Point, size: tuple[int, int], radius: int) -> torch.Tensor:
    """The view of ``x (..., h, w)`` that holds, for every source pixel, its neighbour at ``point``."""
    (dy, dx), (hs, ws) = point, size
    return x[..., dy:dy + hs, radius - 1 + dx:radius - 1 + dx + ws]


class _PathMax(torch.autograd.Function):
    """Max of ``b`` over each pair's path, one direction at a time from shifted views; the gradient goes to the
    first maximal point of the path (as IRN's max-pool over gathered values)."""

    @staticmethod
    def forward(ctx, b: torch.Tensor, radius: int) -> torch.Tensor:  # noqa: D102 - see boundary_affinity
        size = source_size(b.shape[-2], b.shape[-1], radius)
        paths = direction_paths(radius)
        out = b.new_empty(b.shape[0], len(paths), *size)
        arg = torch.empty(out.shape, dtype=torch.uint8, device=b.device)
        for p, (_, path) in enumerate(paths):
            # (B, len, h', w'): one direction's path values, at most 22 x the output slice (radius 10)
            values = torch.stack([_window(b, point, size, radius) for point in path], dim=1)
            best, idx = values.max(dim=1)  # ties: the first maximal index (documented for torch.max)
            out[:, p], arg[:, p] = best, idx
        ctx.save_for_backward(arg)
        ctx.radius, ctx.shape = radius, b.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (arg,) = ctx.saved_tensors
        size = arg.shape[-2:]
        grad_b = grad.new_zeros(ctx.shape)
        for p, (_, path) in enumerate(direction_paths(ctx.radius)):
            for k, point in enumerate(path):
                _window(grad_b, point, size, ctx.radius).add_(grad[:, p] * (arg[:, p] == k))
        return grad_b, None


def boundary_affinity(b: torch.Tensor, radius: int) -> torch.Tensor:
    """IRN's pair affinities from a class-boundary map: ``a_ij = 1 - max_{k in path(i, j)} b_k``.

    A max over shifted views of ``b``, one direction at a time (no index buffers, no gather of all pairs at
    once): memory is the output plus one uint8 argmax per pair, and one direction's path values in passing.
    Differentiable; the gradient of each pair goes to the first maximal point of its path (ties have measure zero
    for sigmoid outputs). IRN's ``path_indices`` gathers 223 MB of int64 indices at radius 10 instead.

    Args:
        b: ``(B, h, w)`` boundary probabilities in ``[0, 1]`` (IRN: sigmoid of the boundary logits; at inference
            the flip-averaged probability, padded with 1).
        radius: pair radius (>= 2); the grid needs ``h >= radius`` and ``w >= 2 * radius - 1``.
    Returns:
        ``(B, P, h - radius + 1, w - 2 * radius + 2)`` affinities in ``[0, 1]``, directions in IRN's order.
    """
    if b.ndim != 3 or not b.is_floating_point():
        raise ValueError(f"b must be a float (B, h, w) boundary map, got {b.dtype} shape {tuple(b.shape)}")
    if b.numel() and not bool(((b >= 0) & (b <= 1)).all()):
        raise ValueError("b must hold boundary probabilities in [0, 1] (no NaN)")
    direction_paths(radius)  # validates the radius
    source_size(b.shape[-2], b.shape[-1], radius)  # validates the grid
    return 1.0 - _PathMax.apply(b, int(radius))
