"""How close `wsss eval --pred` comes to the cost of just reading its PNGs.

The evaluator must decode, per id, the ground-truth mask and the prediction. The bound is that decoding alone,
run over the same (id, mask, prediction) jobs with the same chunking and workers (``wsss.engine.scoring.in_parallel``
with a function that only decodes). The evaluator is timed end to end through ``wsss.stages.eval.run``: opening
the dataset, matching files to ids, decoding, counting, scoring and writing metrics.json. Three joblib backends
(threads, loky processes, fork-started ``multiprocessing`` processes) are measured, plus ``--workers 0`` (no
pool), each after one warm-up run; best of ``--repeats``, bound and evaluator run in turn. ``ratio`` is bound
time / evaluator time (1.0 = the evaluator costs nothing beyond reading its files). ``cpu ratio`` is the same
with CPU seconds (this process's threads + its joined pool processes), which stays put when other processes
take the cores and wall times stretch.

Synthetic data (default): ``--n`` VOC-like 500x375 masks (1-3 ellipses, a 255 band at their borders) in the real
VOC layout, prepared by ``wsss.data.prepare.prepare_voc``, and predictions that are the masks with shifted,
grown or dropped objects, written as palette PNGs.

Usage:
    python benchmarks/eval_speed.py [--n 1464] [--workers 2] [--repeats 5]
    python benchmarks/eval_speed.py --data DATA --split train --pred DIR     # real data
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import wsss.engine.scoring as scoring
import wsss.stages.eval as eval_stage
from wsss.data.palette import read_label_png, write_label_png

HEIGHT, WIDTH = 375, 500


def _ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth with a 255 border band, a prediction that gets some of it wrong), uint8 (375, 500) each."""
    from scipy import ndimage

    gt = np.zeros((HEIGHT, WIDTH), np.uint8)
    pred = np.zeros_like(gt)
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(1, 21))
        gt[_ellipse(HEIGHT, WIDTH, rng)] = cls
        if rng.random() < 0.85:  # found, somewhat off; otherwise missed
            shifted = np.roll(_ellipse(HEIGHT, WIDTH, rng) if rng.random() < 0.2 else gt == cls,
                              tuple(rng.integers(-15, 16, 2)), axis=(0, 1))
            pred[shifted] = cls if rng.random() < 0.9 else int(rng.integers(1, 21))
    band = ndimage.maximum_filter(gt, 5) != ndimage.minimum_filter(gt, 5)
    gt[band] = 255
    return gt, pred


def make_data(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the VOC layout, prepare it and write predictions; returns (prepared data, prediction folder)."""
    from wsss.data.prepare import prepare_voc

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    pred_dir = root / "pred"
    pred_dir.mkdir()
    ids = [f"2000_{i:06d}" for i in range(n + 1)]
    Image.new("RGB", (WIDTH, HEIGHT)).save(root / "blank.jpg")  # prepare wants images; eval never reads them
    rng = np.random.default_rng(seed)
    for image_id in ids:
        gt, pred = _pair(rng)
        os.link(root / "blank.jpg", voc / "JPEGImages" / f"{image_id}.jpg")
        write_label_png(voc / "SegmentationClass" / f"{image_id}.png", gt)
        write_label_png(pred_dir / f"{image_id}.png", pred)
    (pred_dir / f"{ids[-1]}.png").unlink()  # the one val id has no prediction
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in ids[:-1]))
    (lists / "val.txt").write_text(f"{ids[-1]}\n")
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in ids))
    prepare_voc(voc_root=voc, out=root / "data")
    return root / "data", pred_dir


def _decode_only(gt: np.ndarray, path: Path, n: int) -> np.ndarray:
    """The bound's per-item work: the ground truth is already decoded by the caller; decode the prediction."""
    read_label_png(path)
    return np.zeros(1, np.int64)


def _cpu_seconds() -> float:
    """User + system time of this process (all threads) and of its finished children (a joined process pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best_interleaved(fns: list, repeats: int) -> tuple[list[float], list[float]]:
    """Best-of-``repeats`` wall and CPU seconds of each function, run in turn (so load from other processes hits
    all alike). CPU time does not grow when other processes take the cores, wall time does."""
    for fn in fns:
        fn()  # warm-up: page cache, pool start
    wall, cpu = [float("inf")] * len(fns), [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            fn()
            wall[k] = min(wall[k], time.perf_counter() - start)
            cpu[k] = min(cpu[k], _cpu_seconds() - start_cpu)
    return wall, cpu


def measure(data: Path, split: str, pred: Path, workers: int, repeats: int, out: Path) -> list[dict]:
    """Bound and evaluator seconds for each backend (metrics.json goes to ``out``); one row per setting."""
    from wsss.data.prepared import open_dataset

    dataset = open_dataset(data)
    ids = dataset.ids(split)
    jobs = [(i, dataset.mask_path(i), pred / f"{i}.png") for i in ids]
    cfg = eval_stage.EvalConfig(data=data, split=split, pred=pred, out=out)
    default_backend = scoring.BACKEND
    rows = []
    for backend, n_workers in (("none", 0), ("threading", workers), ("loky", workers),
                               ("multiprocessing", workers)):
        scoring.BACKEND = default_backend if backend == "none" else backend
        run_cfg = dataclasses.replace(cfg, workers=n_workers)
        wall, cpu = _best_interleaved([lambda: scoring.in_parallel(_decode_only, jobs, n_workers, n=21),
                                       lambda: eval_stage.run(run_cfg)], repeats)
        rows.append({"backend": backend, "workers": n_workers, "items": len(ids), "bound_s": wall[0],
                     "eval_s": wall[1], "ratio": wall[0] / wall[1],
                     # loky keeps its workers alive, so their CPU time is never reported to this process
                     "cpu_ratio": None if backend == "loky" else cpu[0] / cpu[1]})
    scoring.BACKEND = default_backend
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1464, help="synthetic ids (default 1464, the size of VOC train)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, help="a prepared dataset instead of synthetic data")
    parser.add_argument("--split", default="train")
    parser.add_argument("--pred", type=Path, help="label PNGs for --split of --data")
    args = parser.parse_args()
    logging.getLogger("wsss").setLevel(logging.WARNING)
    eval_stage.setup_logging = lambda: None  # keep the timing loop quiet
    with tempfile.TemporaryDirectory(prefix="eval_speed_") as tmp:
        if args.data is None:
            start = time.perf_counter()
            data, pred = make_data(Path(tmp), args.n)
            print(f"synthetic data: {args.n} pairs of {WIDTH}x{HEIGHT} palette PNGs "
                  f"({time.perf_counter() - start:.1f} s to write)")
        else:
            data, pred = args.data, args.pred
        rows = measure(data, args.split, pred, args.workers, args.repeats, out=Path(tmp) / "metrics")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other processes share these cores); "
          f"evaluator default backend: {scoring.BACKEND}")
    print(f"{'backend':>15} {'workers':>7} {'items':>6} {'decode bound':>13} {'evaluator':>10} "
          f"{'eval img/s':>10} {'ratio':>6} {'cpu ratio':>9}")
    for r in rows:
        print(f"{r['backend']:>15} {r['workers']:>7} {r['items']:>6} {r['bound_s']:>12.3f}s {r['eval_s']:>9.3f}s "
              f"{r['items'] / r['eval_s']:>10.0f} {r['ratio']:>6.2f} "
              f"{'n/a' if r['cpu_ratio'] is None else format(r['cpu_ratio'], '.2f'):>9}")


if __name__ == "__main__":
    main()
