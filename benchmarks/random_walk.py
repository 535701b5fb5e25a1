"""Random walk: our sparse formulation against the reference's dense one, at real VOC size.

Same random inputs for both (a 500x375 image: 63x47 = 2,961 nodes at stride 8; smooth random features give the
affinities, smooth random CAMs the scores), PSA's settings (alpha 16, beta 8, logt 8). Reports the time of
:func:`wsss.ops.random_walk.propagate_cams` each way (best of ``--repeat``), the ratio, the peak memory the walk
itself adds on the stride-8 grid (each in a fresh process: resident-set high-water mark, reset just before the
walk through ``/proc/self/clear_refs``; on CUDA ``torch.cuda.max_memory_allocated``), the agreement of the final
labels, and ours alone at larger sizes to show that memory grows O(N).

    python benchmarks/random_walk.py [--threads 1] [--repeat 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from wsss.ops.affinity import feature_affinity
from wsss.ops.crf import alpha_background_scores
from wsss.ops.random_walk import propagate_cams, random_walk, random_walk_dense

ALPHA, BETA, LOGT = 16, 8, 8


def synthetic_inputs(height: int, width: int, num_classes: int, seed: int = 0):
    """Full-size scores ``(K+1, H, W)`` (background (1 - max)^16 first) and affinities of the stride-8 grid."""
    gen = torch.Generator().manual_seed(seed)
    h, w = -(-height // 8), -(-width // 8)
    coarse = torch.rand(1, 16, max(h // 6, 2), max(w // 6, 2), generator=gen) * 4
    features = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    aff = feature_affinity(features)[0]
    blobs = torch.rand(1, num_classes, 4, 5, generator=gen) ** 3
    cams = F.interpolate(blobs, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(min=0)
    cams = cams / cams.amax(dim=(1, 2), keepdim=True)
    return torch.from_numpy(alpha_background_scores(cams.numpy(), ALPHA)), aff


def resident_kib() -> tuple[int, int]:
    """(peak, current) resident set size of this process in KiB, from /proc/self/status."""
    status = open("/proc/self/status").read()
    return tuple(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmHWM", "VmRSS"))


def measure(fn, device: torch.device, repeat: int):
    """(best seconds, peak extra MiB, result) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        open("/proc/self/clear_refs", "w").write("5")          # reset the high-water mark to the current RSS
        base = resident_kib()[1] * 1024
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resident_kib()[0] * 1024
    return best, (peak - base) / 2**20, result


def grid_scores(scores: torch.Tensor) -> torch.Tensor:
    """The walk's input: full-size scores padded to a multiple of 8 and average-pooled by 8."""
    padded = F.pad(scores, (0, -scores.shape[-1] % 8, 0, -scores.shape[-2] % 8))
    return F.avg_pool2d(padded[None], 8, 8)[0]


def walk_peak_mib(kind: str, height: int, width: int, classes: int, device: str, threads: int,
                  script: str = __file__) -> float:
    """Peak memory of one walk (``kind`` = dense or sparse), measured in a fresh process of ``script`` (its
    ``--memory-of`` mode) so that memory freed by earlier runs and kept by the allocator cannot hide it."""
    cmd = [sys.executable, script, "--memory-of", kind, "--size", f"{height}x{width}", "--classes", str(classes),
           "--device", device, "--threads", str(threads)]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def memory_child(kind: str, size: str, classes: int, device: torch.device) -> None:
    height, width = (int(v) for v in size.split("x"))
    scores, aff = (x.to(device) for x in synthetic_inputs(height, width, classes))
    small = grid_scores(scores)
    walk = random_walk_dense if kind == "dense" else random_walk
    with torch.no_grad():
        _, peak, _ = measure(lambda: walk(small, aff, BETA, LOGT), device, 1)
    print(f"{peak:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--classes", type=int, default=2, help="foreground classes in the image (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-of", choices=["dense", "sparse"], help=argparse.SUPPRESS)
    parser.add_argument("--size", default="375x500", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_of:
        return memory_child(args.memory_of, args.size, args.classes, device)
    peak = functools.partial(walk_peak_mib, classes=args.classes, device=args.device, threads=args.threads)

    scores, aff = (x.to(device) for x in synthetic_inputs(375, 500, args.classes))
    small = grid_scores(scores)
    nodes = small.shape[1] * small.shape[2]
    with torch.no_grad():
        t_fast, _, fast = measure(lambda: propagate_cams(scores, aff, BETA, LOGT), device, args.repeat)
        t_dense, _, dense = measure(lambda: propagate_cams(scores, aff, BETA, LOGT, dense=True), device,
                                    args.repeat)
    m_fast, m_dense = peak("sparse", 375, 500), peak("dense", 375, 500)
    agree = (fast.argmax(0) == dense.argmax(0)).double().mean().item()
    print(f"random walk, 500x375 image (N = {nodes} nodes at stride 8), K+1 = {scores.shape[0]}, beta {BETA}, "
          f"logt {LOGT}, {args.threads} thread(s), {device}")
    print("                      propagate_cams time   walk peak memory")
    print(f"  dense (reference): {t_dense:10.3f} s {m_dense:14.1f} MiB")
    print(f"  sparse (ours):     {t_fast:10.3f} s {m_fast:14.1f} MiB")
    print(f"  speed-up {t_dense / t_fast:.1f}x, walk memory {m_dense / max(m_fast, 1e-3):.0f}x less, "
          f"label agreement {100 * agree:.3f} %, max |score diff| {(fast - dense).abs().max().item():.2e}")
    print("  ours at larger sizes (walk memory should grow ~linearly with N; dense would need 4*N^2 bytes per "
          "matrix):")
    for height, width in ((750, 1000), (1500, 2000)):
        s, a = (x.to(device) for x in synthetic_inputs(height, width, args.classes))
        with torch.no_grad():
            t, _, _ = measure(lambda: propagate_cams(s, a, BETA, LOGT), device, 1)
        m = peak("sparse", height, width)
        n = (-(-height // 8)) * (-(-width // 8))
        print(f"    {width}x{height}: N = {n:6d}, propagate_cams {t:7.3f} s, walk peak {m:6.1f} MiB "
              f"(dense: {4 * n * n / 2**20:8.0f} MiB per matrix)")


if __name__ == "__main__":
    main()
