"""CRF labels: images per second with 1 and 2 joblib workers on synthetic 500x375 images.

Each task builds one synthetic image (coloured ellipses on a noisy background) with CAM-like scores for two
classes and runs :func:`wsss.ops.crf.crf_labels_from_cams` with PSA's settings (alpha 4, CRF 3/3 + 80/13/10,
10 iterations), the per-image work of ``wsss crf labels``. The pool is the one the stage uses (joblib's loky
processes) and is warmed up before timing. Reported: the best of ``--repeat`` interleaved runs per worker count,
the CPU time of one image, and the load average (other processes on the machine lower the speed-up).

    python benchmarks/crf_labels.py [--images 12] [--workers 1,2]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from joblib import Parallel, delayed

from wsss.ops.crf import crf_labels_from_cams

HEIGHT, WIDTH = 375, 500


def synthetic_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 image with two ellipses and their (2, H, W) CAMs (blurred, partial, max 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    image = rng.normal(110, 20, (HEIGHT, WIDTH, 3))
    cams = np.zeros((2, HEIGHT, WIDTH), np.float32)
    for k in range(2):
        cy, cx = rng.uniform(80, HEIGHT - 80), rng.uniform(100, WIDTH - 100)
        ry, rx = rng.uniform(40, 90, size=2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        image[inside < 1] = rng.uniform(0, 255, 3)
        cams[k] = np.exp(-2.0 * inside) * rng.uniform(0.6, 1.0)
    cams /= cams.reshape(2, -1).max(axis=1)[:, None, None]
    return np.clip(image, 0, 255).astype(np.uint8), cams


def one_image(seed: int) -> int:
    image, cams = synthetic_image(seed)
    return int(crf_labels_from_cams(image, cams, np.array([3, 14]), alpha=4).max())


def images_per_second(workers: int, images: int) -> float:
    with Parallel(n_jobs=workers, backend="loky") as pool:
        pool(delayed(one_image)(1000 + i) for i in range(workers))          # start and warm the workers
        start = time.perf_counter()
        pool(delayed(one_image)(i) for i in range(images))
        return images / (time.perf_counter() - start)


def cpu_seconds_per_image(images: int = 4) -> float:
    """CPU time of one image in this process (the single-core ceiling is 1 / this)."""
    start = time.process_time()
    for i in range(images):
        one_image(i)
    return (time.process_time() - start) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs, interleaved (default 3)")
    args = parser.parse_args()
    counts = [int(v) for v in args.workers.split(",")]
    rates = {n: 0.0 for n in counts}
    for _ in range(args.repeat):                  # interleaved, so a busy moment hurts every setting alike
        for n in counts:
            rates[n] = max(rates[n], images_per_second(n, args.images))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CRF labels, {args.images} synthetic {WIDTH}x{HEIGHT} images, 2 classes + background, alpha 4, "
          f"10 iterations, best of {args.repeat}; {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"  CPU time per image: {cpu_seconds_per_image():.3f} s")
    for n, rate in rates.items():
        print(f"  {n} worker(s): {rate:6.2f} images/s   ({rate / rates[counts[0]]:.2f}x)")


if __name__ == "__main__":
    main()
