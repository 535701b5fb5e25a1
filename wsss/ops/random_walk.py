"""PSA's random walk: propagate CAM scores along AffinityNet affinities.

The graph lives on the stride-8 grid (``N = h * w`` nodes). Its weights are ``W = A ** beta`` where ``A`` is the
symmetric affinity matrix with a unit diagonal and the pair affinities of :mod:`wsss.ops.affinity` (each pair in
both directions). The reference normalises the *columns*, ``T = W D^-1`` with ``D`` the degrees, squares ``T``
``logt`` times and multiplies the scores on the left: ``V_rw = V T^t`` with ``t = 2 ** logt``.

Two formulations give the same numbers up to floating-point rounding:

- :func:`random_walk_dense` is the reference: a dense ``N x N`` matrix squared ``logt`` times. Memory
  ``O(N^2)`` (35 MB per copy for a 500x375 image, N = 2,961), time ``O(logt * N^3)``.
- :func:`random_walk` uses that ``W`` has at most ``2P + 1`` non-zeros per row (69 for radius 5) and that
  ``V T^t = ((D^-1 W)^t V^T)^T`` (``W`` is symmetric): ``t`` sparse matrix products with the row-stochastic
  ``D^-1 W``. Memory ``O(P * N + K * N)``, i.e. O(N); time ``O(2^logt * P * K * N)``. It runs on any device
  torch's sparse CSR product supports (CPU, CUDA). Only for a very large ``logt`` (about 16 and more at VOC size;
  the published settings use 6 and 8) would the dense squaring be the faster of the two; never the smaller.

Example:
    >>> scores = torch.rand(3, 63, 47)                 # (K, h, w): background + 2 classes, stride 8
    >>> aff = torch.rand(34, 59, 39)                   # (P, h', w') from feature_affinity
    >>> random_walk(scores, aff, beta=8, logt=8).shape
    torch.Size([3, 63, 47])
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from wsss.ops.affinity import RADIUS, STRIDE, pair_index, pair_offsets, source_size


def _check_walk_inputs(scores: torch.Tensor, aff: torch.Tensor, beta: float, logt: int, radius: int) -> None:
    if scores.ndim != 3:
        raise ValueError(f"scores must be (K, h, w), got shape {tuple(scores.shape)}")
    if aff.ndim != 3:
        raise ValueError(f"aff must be (P, h', w'), got shape {tuple(aff.shape)}")
    h, w = scores.shape[-2:]
    expected = (len(pair_offsets(radius)), *source_size(h, w, radius))
    if tuple(aff.shape) != expected:
        raise ValueError(f"aff has shape {tuple(aff.shape)} but a {h}x{w} score grid with radius {radius} "
                         f"needs {expected}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if isinstance(logt, bool) or int(logt) != logt or logt < 0:
        raise ValueError(f"logt must be an integer >= 0, got {logt}")
    if aff.numel() and not bool((aff >= 0).all()):
        raise ValueError("aff must be >= 0 (affinities lie in (0, 1])")


def _graph_edges(aff: torch.Tensor, h: int, w: int, beta: float, radius: int):
    """Edges of ``W = A ** beta`` in both directions plus the unit diagonal: (rows, cols, values), flat."""
    src, tgt = pair_index(h, w, radius)
    src = src.to(aff.device).expand_as(tgt.to(aff.device)).reshape(-1)
    tgt = tgt.to(aff.device).reshape(-1)
    weights = aff.reshape(-1) ** beta
    diag = torch.arange(h * w, device=aff.device)
    rows = torch.cat([src, tgt, diag])
    cols = torch.cat([tgt, src, diag])
    values = torch.cat([weights, weights, torch.ones(h * w, dtype=aff.dtype, device=aff.device)])
    return rows, cols, values


def dense_affinity_matrix(aff: torch.Tensor, h: int, w: int, radius: int = RADIUS, beta: float = 1.0) -> torch.Tensor:
    """The reference's dense ``(N, N)`` matrix ``A ** beta``: symmetric, unit diagonal, zero beyond the radius.

    Args:
        aff: ``(P, h', w')`` pair affinities of an ``h x w`` grid.
    Returns:
        ``(h*w, h*w)`` with the dtype and device of ``aff``.
    """
    rows, cols, values = _graph_edges(aff, h, w, beta, radius)
    mat = torch.zeros(h * w, h * w, dtype=aff.dtype, device=aff.device)
    return mat.index_put_((rows, cols), values, accumulate=True)


def random_walk_dense(scores: torch.Tensor, aff: torch.Tensor, beta: float, logt: int,
                      radius: int = RADIUS) -> torch.Tensor:
    """The reference formulation: dense column-normalised transition matrix, squared ``logt`` times.

    Args:
        scores: ``(K, h, w)`` scores on the stride-8 grid.
        aff: ``(P, h', w')`` pair affinities (see :func:`wsss.ops.affinity.feature_affinity`).
        beta: power applied to the affinities, > 0.
        logt: the walk takes ``2 ** logt`` steps, >= 0.
    Returns:
        ``(K, h, w)`` propagated scores. Memory O(N^2), time O(logt * N^3) with ``N = h * w``.
    """
    _check_walk_inputs(scores, aff, beta, logt, radius)
    k, h, w = scores.shape
    trans = dense_affinity_matrix(aff, h, w, radius, beta)
    trans = trans / trans.sum(dim=0, keepdim=True)
    for _ in range(int(logt)):
        trans = trans @ trans
    return (scores.reshape(k, h * w).to(trans.dtype) @ trans).reshape(k, h, w)


def _neighbour_weights(aff: torch.Tensor, h: int, w: int, beta: float, radius: int):
    """Row ``j`` of ``W = A ** beta`` as a table: ``(h*w, 2P+1)`` weights over the full disc of offsets.

    Returns the table and the flat column offsets ``dy * w + dx`` of its slots, increasing (|dx| < w / 2).
    """
    half = pair_offsets(radius)
    disc = sorted(set(half) | {(-dy, -dx) for dy, dx in half} | {(0, 0)})
    slot = {offset: i for i, offset in enumerate(disc)}
    hs, ws = source_size(h, w, radius)
    r1 = radius - 1
    table = torch.zeros(h, w, len(disc), dtype=aff.dtype, device=aff.device)
    table[..., slot[(0, 0)]] = 1.0
    for p, (dy, dx) in enumerate(half):
        weight = aff[p] ** beta
        table[:hs, r1:r1 + ws, slot[(dy, dx)]] = weight                        # source -> target
        table[dy:dy + hs, r1 + dx:r1 + dx + ws, slot[(-dy, -dx)]] = weight      # target -> source
    steps = torch.tensor([dy * w + dx for dy, dx in disc], dtype=torch.int32, device=aff.device)
    return table.reshape(h * w, len(disc)), steps


def transition_matrix(aff: torch.Tensor, h: int, w: int, beta: float, radius: int = RADIUS) -> torch.Tensor:
    """The row-stochastic ``D^-1 W`` (the transpose of the reference's ``T``) as a sparse CSR ``(N, N)`` tensor.

    Built row by row from a neighbour table (no sort, int32 indices): ``(2P+1) * 8`` bytes per node kept (0.5 KB
    for radius 5), under 2 KB per node at the peak of the construction.
    """
    table, steps = _neighbour_weights(aff, h, w, beta, radius)
    table /= table.sum(dim=1, keepdim=True)
    keep = table > 0
    columns = (torch.arange(h * w, dtype=torch.int32, device=aff.device)[:, None] + steps)[keep]
    crow = torch.zeros(h * w + 1, dtype=torch.int32, device=aff.device)
    crow[1:] = keep.sum(dim=1).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, columns, table[keep], (h * w, h * w))


def random_walk(scores: torch.Tensor, aff: torch.Tensor, beta: float, logt: int,
                radius: int = RADIUS) -> torch.Tensor:
    """The same walk as :func:`random_walk_dense` as ``2 ** logt`` sparse steps: O(N) memory.

    Args:
        scores: ``(K, h, w)`` scores on the stride-8 grid.
        aff: ``(P, h', w')`` pair affinities.
        beta: power applied to the affinities, > 0.
        logt: the walk takes ``2 ** logt`` steps, >= 0.
    Returns:
        ``(K, h, w)`` propagated scores, equal to the dense formulation up to floating-point rounding.
    """
    _check_walk_inputs(scores, aff, beta, logt, radius)
    k, h, w = scores.shape
    step = transition_matrix(aff, h, w, beta, radius)
    state = scores.reshape(k, h * w).to(step.dtype).t().contiguous()  # (N, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(2 ** int(logt)):
            state = step @ state
    return state.t().reshape(k, h, w)


def propagate_cams(scores: torch.Tensor, aff: torch.Tensor, beta: float, logt: int, radius: int = RADIUS,
                   stride: int = STRIDE, dense: bool = False) -> torch.Tensor:
    """PSA's inference: full-size scores -> stride grid -> random walk -> full size again.

    Pads the scores with 0 on the bottom/right to a multiple of ``stride``, average-pools by ``stride``, walks,
    upsamples bilinearly (``align_corners=False``) to the padded size and crops back. The argmax of the result is
    the random-walk label (see :func:`wsss.ops.crf.labels_from_scores`).

    Args:
        scores: ``(K+1, H, W)`` full-size scores, background first (e.g. ``(1 - max CAM) ** alpha``).
        aff: ``(P, h', w')`` affinities of the ``ceil(H/stride) x ceil(W/stride)`` grid.
        beta, logt, radius: as :func:`random_walk`.
        dense: use the reference's dense formulation instead (for comparison; O(N^2) memory).
    Returns:
        ``(K+1, H, W)`` propagated scores.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be (K+1, H, W), got shape {tuple(scores.shape)}")
    height, width = scores.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    padded = F.pad(scores, (0, pad_w, 0, pad_h))
    small = F.avg_pool2d(padded.unsqueeze(0), stride, stride)[0]
    walk = random_walk_dense if dense else random_walk
    walked = walk(small, aff.to(small.dtype), beta, logt, radius)
    full = F.interpolate(walked.unsqueeze(0), size=padded.shape[-2:], mode="bilinear", align_corners=False)[0]
    return full[:, :height, :width]
