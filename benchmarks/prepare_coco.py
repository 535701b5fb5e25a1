"""``wsss data prepare coco``: masks per second on 1 and 2 workers, side by side, and the cost on the real release.

The toy tree is written by ``wsss data toy --format coco`` (the real layout: JPEGs, ``instances_*.json`` with
polygons, compressed and uncompressed RLE, crowd entries, non-contiguous category ids) with ``--size 640`` (images
640 x 480..640). Its 1-2 objects per image are then joined by extra polygon annotations (ellipses of 24 vertices,
random classes, 4-20 % of the short side) up to 7 or 8 per image with an object, 7.3 on average: the density of
the real release (604,907 + 291,875 annotations over 82,783 + 40,504 images). A mask's work is then that of a
real one (one pycocotools decode and overwrite per annotation, one palette PNG), on somewhat larger images: 90 %
of the real ones have 167k-356k pixels, these 307k-410k, so the projection errs on the slow side.

``wsss.data.coco.prepare_coco`` (what the command runs) is timed end to end into a fresh folder, best of
``--repeat`` runs per worker count, interleaved (a busy moment of the shared machine hits every setting alike);
inside it, the mask phase (``run_jobs``: the jobs, their progress bar, the pool) and the JSON reading are timed
apart. 2 workers are joblib's loky processes, which take about a second to start: the first 2-worker run pays it,
the later ones reuse the pool (``cold`` gives the first run's total).

Projection to the real release: 122,218 masks (the annotated images) at the measured mask rate, plus the two
JSON files (493 MB) at the parse rate measured on the toy files; the lists and labels take a moment. A second
projection uses CPU seconds (the 1-worker run's, which do not stretch when other jobs take the cores) with ideal
scaling over free cores; a control (two busy loops, one after the other and in two processes) says how many
cores the machine actually gave, before and after the runs.

Usage:
    python benchmarks/prepare_coco.py [--images 400] [--workers 1,2] [--repeat 3]
    python benchmarks/prepare_coco.py --quick                      # 200 images, best of 2: under 3 minutes
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import wsss.data.coco as coco

REAL_IMAGES = 82783 + 40504  # train2014 + val2014
REAL_MASKS = (82783 - 702) + (40504 - 367)  # the images with at least one annotation get a mask job
REAL_ANNOTATIONS = 604907 + 291875
REAL_JSON_BYTES = 332556225 + 160682675  # instances_train2014.json + instances_val2014.json
PER_IMAGE = (7, 8)  # annotations per annotated image after densifying ...
PER_IMAGE_P = (0.7, 0.3)  # ... drawn with these probabilities: 7.3 on average


def write_tree(root: Path, images: int, size: int, seed: int) -> None:
    """``wsss data toy --format coco`` into ``root`` (80 % train, 20 % val)."""
    n_val = max(1, images // 5)
    cmd = [sys.executable, "-m", "wsss", "data", "toy", "--format", "coco", "--n-train", str(images - n_val),
           "--n-val", str(n_val), "--size", str(size), "--seed", str(seed), "--out", str(root)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _ellipse_annotation(rng: np.random.Generator, height: int, width: int, category: int) -> dict:
    """One non-crowd polygon annotation: an ellipse of 24 vertices inside the image."""
    short = min(height, width)
    ry, rx = rng.uniform(0.04, 0.2, 2) * short
    cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    xy = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)
    return {"category_id": category, "segmentation": [[round(float(v), 2) for v in xy.ravel()]],
            "area": float(np.pi * rx * ry), "bbox": [float(cx - rx), float(cy - ry), float(2 * rx), float(2 * ry)],
            "iscrowd": 0}


def densify(root: Path, seed: int) -> dict:
    """Add polygon annotations to every annotated image of both JSON files (see the module docstring).

    Returns:
        {"images", "annotated", "annotations", "json_bytes", "pixels" (mean per image)} over both files.
    """
    rng = np.random.default_rng(seed)
    totals = {"images": 0, "annotated": 0, "annotations": 0, "json_bytes": 0, "pixel_sum": 0}
    for path in sorted((root / "annotations").glob("instances_*.json")):
        d = json.loads(path.read_text())
        categories = [c["id"] for c in d["categories"]]
        sizes = {im["id"]: (im["height"], im["width"]) for im in d["images"]}
        counts: dict[int, int] = {}  # annotations per image with an object (crowd-only images stay as they are)
        objects = {a["image_id"] for a in d["annotations"] if not a["iscrowd"]}
        for ann in d["annotations"]:
            counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
        next_id = max((a["id"] for a in d["annotations"]), default=0) + 1
        for image_id, have in sorted((i, c) for i, c in counts.items() if i in objects):
            want = int(rng.choice(PER_IMAGE, p=PER_IMAGE_P))
            for _ in range(max(0, want - have)):
                ann = _ellipse_annotation(rng, *sizes[image_id], int(rng.choice(categories)))
                d["annotations"].append({**ann, "id": next_id, "image_id": image_id})
                next_id += 1
        path.write_text(json.dumps(d))
        totals["images"] += len(d["images"])
        totals["annotated"] += len(counts)
        totals["annotations"] += len(d["annotations"])
        totals["json_bytes"] += path.stat().st_size
        totals["pixel_sum"] += sum(h * w for h, w in sizes.values())
    totals["pixels"] = totals.pop("pixel_sum") / totals["images"]
    return totals


def _busy(n: int = 4_000_000) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_capacity() -> float:
    """How many cores this machine gives right now: time of two busy loops one after the other / in two processes
    at once (2.0 on two free cores, 1.0 when other jobs hold them)."""
    import multiprocessing

    start = time.perf_counter()
    _busy(), _busy()
    serial = time.perf_counter() - start
    with multiprocessing.get_context("fork").Pool(2) as pool:
        start = time.perf_counter()
        pool.map(_busy, [4_000_000, 4_000_000])
        return serial / (time.perf_counter() - start)


class PhaseTimer:
    """Wraps ``wsss.data.coco``'s ``run_jobs`` and ``read_instances`` to time the mask phase and the JSON reading."""

    def __init__(self):
        self.masks = self.seconds = self.json_seconds = self.json_cpu = 0.0
        self._run_jobs, self._read = coco.run_jobs, coco.read_instances

    def __enter__(self) -> "PhaseTimer":
        def run_jobs(fn, jobs, workers, *args, **kwargs):
            start = time.perf_counter()
            out = self._run_jobs(fn, jobs, workers, *args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.masks += len(jobs)
            return out

        def read_instances(path):
            start, cpu = time.perf_counter(), time.process_time()
            out = self._read(path)
            self.json_seconds += time.perf_counter() - start
            self.json_cpu += time.process_time() - cpu
            return out

        coco.run_jobs, coco.read_instances = run_jobs, read_instances
        return self

    def __exit__(self, *exc) -> None:
        coco.run_jobs, coco.read_instances = self._run_jobs, self._read


def prepare_once(root: Path, out: Path, workers: int) -> dict:
    """One ``prepare_coco`` into a fresh ``out``: total, mask-phase and JSON seconds, masks, CPU seconds here."""
    shutil.rmtree(out, ignore_errors=True)  # a complete folder of the same inputs would be left alone
    start, cpu = time.perf_counter(), time.process_time()
    with PhaseTimer() as timer:
        coco.prepare_coco(root, out, workers=workers)
    return {"total": time.perf_counter() - start, "masks_s": timer.seconds, "json_s": timer.json_seconds,
            "json_cpu": timer.json_cpu, "masks": int(timer.masks), "cpu": time.process_time() - cpu}


def measure(root: Path, work: Path, counts: list[int], repeat: int) -> dict[int, dict]:
    """Best-of-``repeat`` (by mask phase) runs per worker count, interleaved; ``cold`` = the first run's total."""
    best: dict[int, dict] = {}
    cold: dict[int, float] = {}
    for _ in range(repeat):
        for n in counts:
            run = prepare_once(root, work / f"data_{n}", n)
            cold.setdefault(n, run["total"])
            if n not in best or run["masks_s"] < best[n]["masks_s"]:
                best[n] = run
    return {n: {**b, "cold": cold[n]} for n, b in best.items()}


def report(best: dict[int, dict], tree: dict) -> None:
    """The side-by-side table and the projections to the real release (measured rates, and idle cores)."""
    first = next(iter(best.values()))
    base = first["masks"] / first["masks_s"]
    print(f"{'workers':>7} {'masks':>6} {'mask phase':>10} {'masks/s':>8} {'speed-up':>8} {'total':>7} "
          f"{'cold total':>10} {'cpu/mask':>9}   (cpu: this process's, without JSON; with workers, its dispatch)")
    for n, b in best.items():
        rate = b["masks"] / b["masks_s"]
        cpu = f"{1000 * (b['cpu'] - b['json_cpu']) / b['masks']:7.1f}ms"  # this process: the work, or the dispatch
        print(f"{n:>7} {b['masks']:>6} {b['masks_s']:>9.2f}s {rate:>8.1f} {rate / base:>7.2f}x {b['total']:>6.2f}s "
              f"{b['cold']:>9.2f}s {cpu}")
    json_rate = tree["json_bytes"] / min(b["json_s"] for b in best.values())
    json_s = REAL_JSON_BYTES / json_rate
    print(f"JSON reading: {tree['json_bytes'] / 1e6:.2f} MB of toy JSON at {json_rate / 1e6:.1f} MB/s -> "
          f"{json_s:.0f} s for the real {REAL_JSON_BYTES / 1e6:.0f} MB")
    print(f"projection to the real release ({REAL_IMAGES:,} images, {REAL_MASKS:,} masks, "
          f"{REAL_ANNOTATIONS:,} annotations):")
    for n, b in best.items():
        masks_s = REAL_MASKS / (b["masks"] / b["masks_s"])
        print(f"  {n} worker(s), measured rate: masks {masks_s / 60:5.1f} min + JSON {json_s / 60:.1f} min = "
              f"{(masks_s + json_s) / 60:5.1f} min")
    serial = [b for n, b in best.items() if n <= 1]
    if serial:  # CPU seconds do not stretch when other jobs take the cores: the projection for free cores
        mask_cpu = (serial[0]["cpu"] - serial[0]["json_cpu"]) / serial[0]["masks"]
        json_cpu = REAL_JSON_BYTES / (tree["json_bytes"] / min(b["json_cpu"] for b in best.values()))
        cores = ", ".join(f"{c} {(REAL_MASKS * mask_cpu / c + json_cpu) / 60:.1f} min" for c in (1, 2, 4, 8))
        print(f"  on free cores, ideal scaling ({1000 * mask_cpu:.1f} ms of CPU per mask, JSON {json_cpu:.0f} s): "
              f"{cores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="toy images, 80 %% train (default 400)")
    parser.add_argument("--size", type=int, default=640, help="long side of the toy images (default 640)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs, interleaved (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 images, best of 2")
    args = parser.parse_args()
    images, repeat = (200, 2) if args.quick else (args.images, args.repeat)
    logging.getLogger("wsss").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="prepare_coco_") as tmp:
        root, start = Path(tmp) / "coco", time.perf_counter()
        write_tree(root, images, args.size, args.seed)
        tree = densify(root, args.seed)
        print(f"toy tree: {tree['images']} images ({tree['annotated']} annotated, mean {tree['pixels'] / 1e3:.0f}k "
              f"pixels), "
              f"{tree['annotations']} annotations ({tree['annotations'] / tree['annotated']:.2f} per annotated "
              f"image), written in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}")
        capacity = parallel_capacity()
        best = measure(root, Path(tmp), [int(v) for v in args.workers.split(",")], repeat)
        print(f"best of {repeat} runs per setting; load average now {os.getloadavg()[0]:.2f}; control: two busy "
              f"loops ran {capacity:.2f}x faster in two processes than one after the other before the runs, "
              f"{parallel_capacity():.2f}x after (2.00x = two free cores)")
        report(best, tree)


if __name__ == "__main__":
    main()
