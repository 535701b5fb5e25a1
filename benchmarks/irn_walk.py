"""IRN's boundary random walk: our sparse formulation against IRN's dense one, at real VOC size.

Same random inputs for both (a 500x375 image: 125x94 = 11,750 nodes at stride 4; a smooth random boundary map in
[0, 1] with thin ridges along the zero crossings of a smooth random field, smooth random CAMs of ``--classes``
classes, each row max-normalised as IRN's stride-4 ``cam``), IRN's settings (radius 5, beta 10, logt 8). Ours is
:func:`wsss.ops.irn.propagate_boundaries` (affinities on the padded grid, ``2 ** logt`` sparse steps); the dense
one is IRN's ``propagate_to_edge`` written below (:func:`dense_walk`: the padded graph's dense symmetric affinity
matrix, cropped to the image's nodes, ``A ** beta`` column-normalised and squared ``logt`` times). Both include
the boundary -> affinity step. Reports the time of each (best of ``--repeat``), the ratio, the peak memory each walk
adds (each in a fresh process: resident-set high-water mark, reset just before the walk through
``/proc/self/clear_refs``; on CUDA ``torch.cuda.max_memory_allocated``), the agreement of the semantic labels
(:func:`wsss.ops.irn.semantic_labels`) and of the walked scores, and ours alone at larger sizes (memory O(N)).

The dense walk costs about 2.6e13 flop at 500x375 (8 squarings of an 11,750^2 matrix): about 8 minutes per run on
one thread of the 2-core development VM (one 11,750^2 product took 60 s), so the full run takes over half an hour
there (``--repeat`` + 1 dense runs). ``--quick`` (under 3 minutes on one thread) compares at 250x188 (N = 2,961)
with one repeat and runs ours alone at 500x375 and 1000x750.

    python benchmarks/irn_walk.py [--threads 1] [--repeat 3] [--classes 2] [--device cpu] [--quick]
"""
from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

import random_walk  # the sibling script (benchmarks run as scripts)
from random_walk import measure
from wsss.ops.irn import BETA, LABEL_STRIDE, LOGT, propagate_boundaries, semantic_labels
from wsss.ops.multiscale import normalize_cams
from wsss.ops.path_index import INFER_RADIUS, boundary_affinity, irn_directions

RADIUS = INFER_RADIUS
RIDGE = 0.1  # boundary = exp(-(field / RIDGE)^2): ridges about one grid cell wide where the field crosses 0


def synthetic_inputs(height: int, width: int, num_classes: int, seed: int = 0):
    """``(cams (K, h, w), boundary (h, w))`` float32 on the stride-4 grid ``h = ceil(H / 4)``, ``w = ceil(W / 4)``.

    The boundary is near 1 along the zero crossings of a smooth random field (closed walls between regions), near
    0 elsewhere; the CAMs are smooth random blobs, each class map divided by its max (+1e-5, as IRN's ``cam``).
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = -(-height // LABEL_STRIDE), -(-width // LABEL_STRIDE)
    coarse = torch.rand(1, 1, max(h // 12, 2), max(w // 12, 2), generator=gen) * 2 - 1
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    boundary = torch.exp(-(field / RIDGE) ** 2)
    blobs = torch.rand(1, num_classes, 4, 5, generator=gen) ** 3
    cams = F.interpolate(blobs, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(min=0)
    return normalize_cams(cams), boundary


def dense_walk(cams: torch.Tensor, boundary: torch.Tensor, radius: int = RADIUS, beta: float = BETA,
               logt: int = LOGT) -> torch.Tensor:
    """IRN's ``propagate_to_edge`` (irn.md §5), dense, with IRN's allocations.

    Pads the boundary with 1 by ``radius`` left, right and bottom; builds the dense symmetric ``(Np, Np)``
    affinity matrix of the padded grid (pair affinities both ways, unit diagonal); crops it to the ``N = h * w``
    image nodes (a copy, while the cropped matrix is alive next to ``A ** beta`` and the transition matrix, as in
    IRN); ``T = A ** beta / column sums`` squared ``logt`` times; returns ``(cams * (1 - b)) @ T``.

    Args:
        cams: ``(K, h, w)`` stride-4 CAMs; boundary: ``(h, w)`` in ``[0, 1]``.
    Returns:
        ``(K, h, w)`` walked scores. Memory about ``4 * 4 N^2`` bytes (float32), time ``O(logt * N^3)``.
    """
    k, h, w = cams.shape
    hp, wp = h + radius, w + 2 * radius
    padded = F.pad(boundary[None], (radius, radius, 0, radius), value=1.0)
    aff = boundary_affinity(padded, radius)[0]                          # (P, h + 1, w + 2), IRN's order
    hs, ws = aff.shape[1:]
    dev = aff.device
    src = (torch.arange(hs, device=dev)[:, None] * wp + radius - 1 + torch.arange(ws, device=dev)).reshape(-1)
    steps = torch.tensor([dy * wp + dx for dy, dx in irn_directions(radius)], device=dev)
    dst = (src[None] + steps[:, None]).reshape(-1)
    src = src.repeat(len(steps))
    diag = torch.arange(hp * wp, device=dev)
    values = aff.reshape(-1)
    full = torch.zeros(hp * wp, hp * wp, dtype=aff.dtype, device=dev)
    full.index_put_((torch.cat([src, dst, diag]), torch.cat([dst, src, diag])),
                    torch.cat([values, values, torch.ones_like(diag, dtype=aff.dtype)]))
    dense_aff = full.view(hp, wp, hp, wp)[:h, radius:radius + w, :h, radius:radius + w].reshape(h * w, h * w)
    del full
    scaled = dense_aff ** beta
    trans = scaled / scaled.sum(dim=0, keepdim=True)
    for _ in range(int(logt)):
        trans = trans @ trans
    return ((cams * (1 - boundary)).reshape(k, h * w) @ trans).reshape(k, h, w)


WALKS = {"dense": dense_walk, "sparse": propagate_boundaries}


def walk_peak_mib(kind: str, height: int, width: int, classes: int, device: str, threads: int) -> float:
    """Peak memory of one walk, in a fresh process of this script (see ``random_walk.walk_peak_mib``)."""
    return random_walk.walk_peak_mib(kind, height, width, classes, device, threads, script=__file__)


def memory_child(kind: str, size: str, classes: int, device: torch.device) -> None:
    height, width = (int(v) for v in size.split("x"))
    cams, boundary = (x.to(device) for x in synthetic_inputs(height, width, classes))
    with torch.no_grad():
        _, peak, _ = measure(lambda: WALKS[kind](cams, boundary), device, 1)
    print(f"{peak:.2f}")


def compare(height: int, width: int, args, peak) -> None:
    """Time, memory and agreement of both walks on one image size; prints the table."""
    device = torch.device(args.device)
    cams, boundary = (x.to(device) for x in synthetic_inputs(height, width, args.classes))
    nodes = boundary.numel()
    with torch.no_grad():
        t_fast, _, fast = measure(lambda: propagate_boundaries(cams, boundary), device, args.repeat)
        t_dense, _, dense = measure(lambda: dense_walk(cams, boundary), device, args.repeat)
    m_fast, m_dense = peak("sparse", height, width), peak("dense", height, width)
    classes = list(range(args.classes))
    labels_fast = semantic_labels(fast.cpu(), classes, (height, width))
    labels_dense = semantic_labels(dense.cpu(), classes, (height, width))
    equal = (labels_fast == labels_dense).mean()
    diff = (fast - dense).abs().max().item()
    print(f"IRN boundary random walk, {width}x{height} image (N = {nodes} nodes at stride 4), K = {args.classes}, "
          f"radius {RADIUS}, beta {BETA}, logt {LOGT}, {args.threads} thread(s), {device}, best of {args.repeat}")
    print("                      walk time         walk peak memory")
    print(f"  dense (IRN):       {t_dense:10.3f} s {m_dense:14.1f} MiB")
    print(f"  sparse (ours):     {t_fast:10.3f} s {m_fast:14.1f} MiB")
    print(f"  speed-up {t_dense / t_fast:.1f}x, walk memory {m_dense / max(m_fast, 1e-3):.0f}x less "
          f"(one dense N x N matrix: {4 * nodes ** 2 / 2**20:.1f} MiB)")
    print(f"  labels {'identical' if equal == 1 else 'DIFFER'}: {100 * equal:.3f} % of {labels_fast.size} pixels "
          f"equal; max |walked score diff| {diff:.2e} (walked max {dense.abs().max().item():.3f})")


def ours_alone(sizes, args, peak) -> None:
    """Ours at larger sizes: time and walk memory should grow about linearly with N."""
    device = torch.device(args.device)
    print("  ours at larger sizes (dense would need 4*N^2 bytes per matrix):")
    for height, width in sizes:
        cams, boundary = (x.to(device) for x in synthetic_inputs(height, width, args.classes))
        with torch.no_grad():
            t, _, _ = measure(lambda: propagate_boundaries(cams, boundary), device, 1)
        n = boundary.numel()
        print(f"    {width}x{height}: N = {n:6d}, walk {t:7.3f} s, walk peak {peak('sparse', height, width):6.1f} "
              f"MiB (dense: {4 * n * n / 2**20:8.0f} MiB per matrix)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeat", type=int, help="best of this many runs (default 3; 1 with --quick)")
    parser.add_argument("--classes", type=int, default=2, help="foreground classes in the image (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="compare at 250x188; ours alone at 500x375, 1000x750")
    parser.add_argument("--memory-of", choices=sorted(WALKS), help=argparse.SUPPRESS)
    parser.add_argument("--size", default="375x500", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        return memory_child(args.memory_of, args.size, args.classes, torch.device(args.device))
    args.repeat = args.repeat or (1 if args.quick else 3)
    peak = functools.partial(walk_peak_mib, classes=args.classes, device=args.device, threads=args.threads)
    compare(*((188, 250) if args.quick else (375, 500)), args, peak)
    ours_alone(((375, 500), (750, 1000)) if args.quick else ((750, 1000), (1500, 2000)), args, peak)


if __name__ == "__main__":
    main()
