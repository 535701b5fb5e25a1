"""Peak memory of ``wsss eval`` on N and 4N ids of an 81-class toy split: flat, the evaluator holds no predictions.

A COCO ``val`` has 40,137 images; the evaluator must score them without keeping predictions (or per-chunk
results) in memory. This writes ``--factor`` x ``--n`` small synthetic pairs (``--size`` WxH label PNGs, 80
classes + background, and CAMs of the classes present) into a prepared dataset with two splits, ``small`` (the
first N ids) and ``large`` (all of them), then runs ``wsss.stages.eval.run`` (what ``wsss eval`` calls) once per
setting, each in a fresh subprocess, and reads that process's peak resident memory with
``resource.getrusage`` (``ru_maxrss``; the largest pool worker is reported apart, as ``RUSAGE_CHILDREN``).

Settings: ``--pred`` (label PNGs) and ``--cams --curve`` (the 61-threshold sweep, whose per-chunk result is
61 x 81 x 81 int64, 3.2 MB), on ``--workers`` 0 and 2, for

* ``streaming``: the evaluator as it is (chunk counts summed group by group, ``wsss.engine.scoring.in_parallel``);
* ``holding``: the same evaluator with every chunk's result kept until all are summed (the formulation before
  issue 12), to show that the measurement sees memory that grows with the number of ids;
* ``import``: the subprocess only imports the evaluator and opens the dataset (the floor of every row).

Usage:
    python benchmarks/eval_memory.py [--n 5000] [--factor 4] [--workers 0,2]
    python benchmarks/eval_memory.py --quick          # N = 1000, under a minute
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

NUM_CLASSES = 80  # foreground classes, as COCO


def _pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ground truth with a 255 row, prediction, CAMs float32 (K, H, W) of the prediction's classes, classes (K,))
    of 1-3 rectangles; the prediction is the ground truth shifted by up to 3 pixels, a class now and then wrong."""
    gt = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        gt[y:y + int(rng.integers(6, h // 2)), x:x + int(rng.integers(6, w // 2))] = rng.integers(1, NUM_CLASSES + 1)
    pred = np.roll(gt, tuple(int(v) for v in rng.integers(-3, 4, 2)), axis=(0, 1))
    if rng.random() < 0.2:
        pred[pred == pred.max()] = rng.integers(1, NUM_CLASSES + 1)
    classes = np.unique(pred[pred > 0]).astype(np.int64) - 1
    cams = np.stack([(pred == c + 1) * rng.uniform(0.3, 1.0) + rng.uniform(0, 0.4, (h, w)) for c in classes])
    gt[0, :] = 255
    return gt, pred, np.minimum(cams, 1).astype(np.float32), classes


def make_data(root: Path, counts: dict[str, int], cam_ids: int, size: tuple[int, int], seed: int = 0) -> dict:
    """The prepared dataset (masks only: eval reads no image) with one split per entry of ``counts`` (the first
    ``count`` ids), and per split a folder of its prediction PNGs and, for the first ``cam_ids`` ids, of its CAMs.

    Returns:
        ``{"data": folder, "pred_<split>": folder, "cams_<split>": folder}``.
    """
    from wsss.artifacts import OutputDir
    from wsss.artifacts.items import write_cam
    from wsss.data.classes import COCO_CLASSES
    from wsss.data.dataset_writer import base_extra, write_prepared
    from wsss.data.palette import VOC_PALETTE, write_label_png
    from wsss.data.prepare import KIND, MASKS_DIR

    total = max(counts.values())
    out = OutputDir.open(root / "data", kind=KIND, stage="bench_eval_memory", config={"n": total}, inputs={})
    every = {"pred": root / "pred_all", "cams": root / "cams_all"}
    for folder in (out.folder / MASKS_DIR, *every.values()):
        folder.mkdir(parents=True)
    rng, (w, h) = np.random.default_rng(seed), size
    ids, labels = [f"{i:012d}" for i in range(total)], {}
    for k, image_id in enumerate(ids):
        gt, pred, cams, classes = _pair(rng, h, w)
        labels[image_id] = sorted(int(c) - 1 for c in np.unique(gt) if 0 < c < 255)
        write_label_png(out.folder / MASKS_DIR / f"{image_id}.png", gt)
        write_label_png(every["pred"] / f"{image_id}.png", pred)
        if k < cam_ids:
            write_cam(every["cams"] / f"{image_id}.npz", cams, classes)
    paths: dict = {}
    for split, count in counts.items():  # each split's folders hold the same files (hard links)
        for kind, suffix in (("pred", ".png"), ("cams", ".npz")):
            folder = paths[f"{kind}_{split}"] = root / f"{kind}_{split}"
            folder.mkdir()
            for image_id in ids[:count if kind == "pred" else min(count, cam_ids)]:
                os.link(every[kind] / f"{image_id}{suffix}", folder / f"{image_id}{suffix}")
    extra = base_extra("folder", COCO_CLASSES, VOC_PALETTE, root, "benchmark")
    write_prepared(out, {split: ids[:count] for split, count in counts.items()}, labels,
                   {i: "none.jpg" for i in ids}, extra)
    return {"data": out.folder, **paths}


def holding_in_parallel(fn, jobs: list, workers: int, n: int, **kwargs):
    """The evaluator's loop as it was before issue 12: every chunk's result is kept until all are summed."""
    from joblib import Parallel, delayed

    from wsss.engine.scoring import BACKEND, _score_chunk

    size = max(1, min(64, -(-len(jobs) // max(1, 4 * workers))))
    chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    if workers <= 1 or len(chunks) == 1:
        parts = [_score_chunk(c, n, fn, **kwargs) for c in chunks]
    else:
        parts = Parallel(n_jobs=workers, backend=BACKEND)(delayed(_score_chunk)(c, n, fn, **kwargs) for c in chunks)
    counts = [p[0] for p in parts if p[0] is not None]
    return (sum(counts[1:], counts[0]) if counts else None), [m for p in parts for m in p[1]]


def child(spec: dict) -> dict:
    """One measurement, in this (fresh) process: the settings of ``spec``; returns peak memory and time."""
    import logging

    import wsss.stages.eval as eval_stage
    from wsss.data.prepared import open_dataset

    logging.getLogger("wsss").setLevel(logging.WARNING)
    eval_stage.setup_logging = lambda: None
    if spec["variant"] == "holding":
        eval_stage.in_parallel = holding_in_parallel
    open_dataset(spec["data"]).ids(spec["split"])
    start, miou = time.perf_counter(), None
    if spec["variant"] != "import":
        source = {"pred": spec["pred"]} if spec["mode"] == "pred" else {"cams": spec["cams"], "curve": True}
        metrics = eval_stage.run(eval_stage.EvalConfig(data=Path(spec["data"]), split=spec["split"],
                                                       workers=spec["workers"], out=Path(spec["out"]), **source))
        miou = metrics["miou"]
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds": time.perf_counter() - start, "miou": miou}


def measure(spec: dict) -> dict:
    """:func:`child` in a new Python process (so each peak is its own)."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(mode: str, ids: tuple, workers: int, variant: str, small: dict, large: dict) -> str:
    score = "" if small["miou"] is None else f"   {100 * small['miou']:.2f} / {100 * large['miou']:.2f}"
    return (f"{mode:>6} {ids[0]:>6} {ids[1]:>6} {workers:>7} {variant:>9} {small['peak_mib']:>9.1f} "
            f"{large['peak_mib']:>9.1f} {large['peak_mib'] - small['peak_mib']:>+8.1f} {small['seconds']:>7.1f} "
            f"{large['seconds']:>7.1f}{score}")


def run_rows(paths: dict, sizes: dict, workers: list[int], out: Path) -> None:
    """Print one row per (mode, workers, variant): peaks on the small and the large split, and their difference."""
    print(f"{'mode':>6} {'N':>6} {'4N':>6} {'workers':>7} {'variant':>9} {'peak N':>9} {'peak 4N':>9} "
          f"{'growth':>8} {'time N':>7} {'time 4N':>7}   mIoU N / 4N   (MiB of the eval process; seconds)")
    for mode in ("pred", "curve"):
        for n_workers in workers:
            for variant in ("import", "streaming", "holding"):
                if variant == "import" and (mode, n_workers) != ("pred", workers[0]):
                    continue
                peaks = {}
                for which in ("small", "large"):
                    split = which if mode == "pred" else f"curve_{which}"
                    peaks[which] = measure({"data": str(paths["data"]), "split": split, "mode": mode,
                                            "workers": n_workers, "variant": variant, "out": str(out),
                                            "pred": str(paths[f"pred_{split}"]), "cams": str(paths[f"cams_{split}"])})
                ids = (sizes[mode], sizes[mode] * sizes["factor"])
                print(_row(mode, ids, n_workers, variant, peaks["small"], peaks["large"]), flush=True)


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="ids of the small split, --pred (default 5000)")
    parser.add_argument("--curve-n", type=int, default=1300, help="ids of the small split, --curve (default 1300)")
    parser.add_argument("--factor", type=int, default=4, help="the large split has factor x n ids (default 4)")
    parser.add_argument("--size", default="64x48", help="WxH of every map (default 64x48)")
    parser.add_argument("--workers", default="0,2", help="comma-separated --workers values (default 0,2)")
    parser.add_argument("--quick", action="store_true", help="--n 1000 --curve-n 400")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sizes = {"pred": 1000 if args.quick else args.n, "curve": 400 if args.quick else args.curve_n,
             "factor": args.factor}
    counts = {"small": sizes["pred"], "large": sizes["pred"] * args.factor, "curve_small": sizes["curve"],
              "curve_large": sizes["curve"] * args.factor}
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="eval_memory_") as tmp:
        start = time.perf_counter()
        paths = make_data(Path(tmp), counts, counts["curve_large"], size)
        print(f"toy splits of {size[0]}x{size[1]} maps, {NUM_CLASSES} classes + background: {counts} "
              f"({time.perf_counter() - start:.1f} s to write); {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f}")
        run_rows(paths, sizes, [int(v) for v in args.workers.split(",")], Path(tmp) / "metrics")


if __name__ == "__main__":
    main()
