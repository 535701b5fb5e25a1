"""``wsss eval``: mIoU of label PNGs, or of CAMs with a background threshold (optionally swept), over one split.

One confusion matrix is accumulated over every id of ``--split`` (ground-truth pixels of 255 left out; predicted
255 counted as wrong, see :mod:`wsss.ops.confusion`) and written, with per-class IoU/precision/recall, mIoU with
background (N classes, the number papers report) and without (foreground only), and pixel accuracy, to
``metrics.json`` in ``--out`` (default: the evaluated folder). Scores are fractions in [0, 1]; NaN (a class
absent from both ground truth and prediction) is written as null and left out of the means.

Inputs:
    ``--pred DIR``: one label PNG (palette or grayscale) per id. ``--cams DIR``: one CAM ``.npz`` per id, turned
    into labels with a constant background ``--threshold`` (default 0.2, PSA's ``out_cam_pred``), a power
    background ``--alpha`` ((1 - max)^alpha), or, with ``--curve``, every threshold of ``--thresholds
    START,STOP,STEP`` (default 0.00..0.60 by 0.01, stop included; SEAM sweeps 0.00..0.59). The curve's best
    threshold is tuned on the ground truth, and ``metrics.json`` says so (``tuned_on_ground_truth``); the
    top-level scores are then those at that threshold.

    DIR is read as a wsss artifact when it has a manifest (validated: kind, item count); a plain folder (made by
    another tool) is accepted, with a log line saying so. A missing id, a file that is no id of the split, or a
    size that differs from the ground truth is a user error naming the ids; ``--allow-missing`` scores the ids
    present and lists the missing ones in ``metrics.json``. Files outside the split are skipped (and counted)
    only when DIR's manifest names another split, e.g. the ``train`` ids inside a ``train_aug`` artifact.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from wsss import __version__
from wsss.artifacts import Manifest, input_record, write_json_atomic
from wsss.artifacts.items import FORMATS, listed, open_items, split_items
from wsss.config import runtime, to_dict
from wsss.data.classes import BACKGROUND
from wsss.errors import UserError
from wsss.engine.scoring import cam_counts, in_parallel, label_counts, sweep_counts
from wsss.ops.confusion import ConfusionMatrix
from wsss.process import LOG, setup_logging

DEFAULT_THRESHOLD = 0.2
METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of ``wsss eval`` (see the module docstring). ``thresholds`` is the ``--curve`` sweep as
    (start, stop, step), stop included; ``workers`` decode in parallel (None = all cores up to 8, 0 = here)."""

    data: Optional[Path] = None
    split: Optional[str] = None
    pred: Optional[Path] = None
    cams: Optional[Path] = None
    threshold: Optional[float] = None
    alpha: Optional[float] = None
    curve: bool = False
    thresholds: tuple[float, float, float] = (0.0, 0.60, 0.01)
    allow_missing: bool = False
    out: Optional[Path] = None
    workers: Optional[int] = runtime(None)

    def __post_init__(self):
        if (self.pred is None) == (self.cams is None):
            raise UserError("give exactly one of --pred DIR (label PNGs) or --cams DIR (a cam artifact)")
        given = [name for name, v in (("--threshold", self.threshold), ("--alpha", self.alpha),
                                      ("--curve", self.curve or None)) if v is not None]
        if self.pred is not None and given:
            raise UserError(f"{', '.join(given)}: only with --cams (label PNGs have no background score)")
        if len(given) > 1:
            raise UserError(f"{' and '.join(given)}: choose one way to score the background")
        if self.alpha is not None and not self.alpha > 0:
            raise UserError(f"--alpha must be > 0, got {self.alpha}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise UserError(f"--threshold must be a number, got {self.threshold}")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")
        sweep_range(self.thresholds)


def sweep_range(spec) -> list[float]:
    """Thresholds ``start, start + step, ..., <= stop`` (rounded to 1e-9) from a (start, stop, step) triple."""
    try:
        start, stop, step = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise UserError(f"--thresholds expects START,STOP,STEP, got {spec!r}") from None
    if not (np.isfinite([start, stop, step]).all() and step > 0 and stop >= start):
        raise UserError(f"--thresholds {start},{stop},{step}: need STEP > 0 and STOP >= START")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    if count > 10000:
        raise UserError(f"--thresholds {start},{stop},{step}: {count} thresholds, at most 10000")
    return [round(start + i * step, 9) for i in range(count)]


@dataclasses.dataclass(frozen=True)
class Source:
    """The folder under evaluation: ``option`` is ``--pred`` or ``--cams``."""

    folder: Path
    option: str
    kind: str
    suffix: str
    manifest: Optional[Manifest]


def open_source(cfg: EvalConfig) -> Source:
    """Validate ``--pred``/``--cams``: a complete artifact of the right kind, or a plain folder of items."""
    option, folder, kind = ("--pred", cfg.pred, "label") if cfg.pred is not None else ("--cams", cfg.cams, "cam")
    manifest = open_items(folder, kind, option, require_manifest=False)
    return Source(Path(folder), option, kind, FORMATS[kind].suffix, manifest)


def mask_paths(data, split: str, ids: list[str]) -> list[Path]:
    """Ground-truth mask paths of ``ids``; ids without a mask are a user error."""
    paths = [data.mask_path(i) for i in ids]
    lacking = [i for i, p in zip(ids, paths) if p is None]
    if lacking:
        raise UserError(f"--split {split}: {len(lacking)} of {len(ids)} ids have no ground-truth mask: "
                        f"{listed(lacking)} (evaluate a split with masks, e.g. train or val)")
    return paths


# ---- scoring: workers read (id, gt path, item path) jobs and return summed counts + size mismatches ----------

def _metrics_path(cfg: EvalConfig, source: Source) -> Path:
    folder = Path(cfg.out) if cfg.out is not None else source.folder
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: is a regular file, expected a folder for {METRICS_FILE}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {folder}: cannot create the folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder}: not writable, cannot write {METRICS_FILE} there (give --out DIR)")
    return folder / METRICS_FILE


def _nullable(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, np.float64)]


def _scores(matrix: np.ndarray) -> dict:
    """The scores of one (N, N + 1) confusion matrix, as JSON-ready values."""
    scores = ConfusionMatrix(matrix.shape[0], matrix=matrix).compute()
    return {"confusion_matrix": matrix[:, :-1].tolist(), "pred_ignored": matrix[:, -1].tolist(),
            "iou": _nullable(scores["iou"]), "precision": _nullable(scores["precision"]),
            "recall": _nullable(scores["recall"]), "miou": _nullable([scores["miou"]])[0],
            "miou_foreground": _nullable([scores["miou_foreground"]])[0],
            "pixel_accuracy": _nullable([scores["pixel_accuracy"]])[0]}


def _counted(source: Source, result: tuple) -> np.ndarray:
    counts, mismatched = result
    if mismatched:
        raise UserError(f"{source.option} {source.folder}: {len(mismatched)} items differ in size from their "
                        f"ground truth: {listed(mismatched)}")
    return counts


def _count(cfg: EvalConfig, source: Source, jobs: list, n: int, workers: int):
    """Accumulate the counts; returns ((N, N + 1) matrix, background record, curve record or None)."""
    if cfg.pred is not None:
        return _counted(source, in_parallel(label_counts, jobs, workers, n=n)), {}, None
    if not cfg.curve:
        background = ({"mode": "power", "alpha": cfg.alpha} if cfg.alpha is not None else
                      {"mode": "constant", "threshold": cfg.threshold if cfg.threshold is not None
                       else DEFAULT_THRESHOLD})
        matrix = _counted(source, in_parallel(cam_counts, jobs, workers, n=n, background=background))
        return matrix, background, None
    thresholds = sweep_range(cfg.thresholds)
    stack = _counted(source, in_parallel(sweep_counts, jobs, workers, n=n, thresholds=np.asarray(thresholds)))
    stack = np.concatenate([stack, np.zeros((len(thresholds), n, 1), np.int64)], axis=2)
    curve = [_scores(m) for m in stack]
    mious = np.array([np.nan if c["miou"] is None else c["miou"] for c in curve])
    best = int(np.nanargmax(mious)) if not np.isnan(mious).all() else 0
    record = {"thresholds": thresholds, "miou": [c["miou"] for c in curve],
              "miou_foreground": [c["miou_foreground"] for c in curve], "best_threshold": thresholds[best],
              "best_miou": curve[best]["miou"], "tuned_on_ground_truth": True}
    background = {"mode": "constant", "threshold": thresholds[best], "chosen_by": "curve (tuned on ground truth)"}
    return stack[best], background, record


def run(cfg: EvalConfig) -> dict:
    """Evaluate ``cfg.pred`` or ``cfg.cams`` on ``cfg.split``; write and return the content of metrics.json."""
    from wsss.data.prepared import open_dataset

    setup_logging()  # numpy only: no torch, no seeds, no device (see runtime.setup for stages that need them)
    if cfg.data is None:
        raise UserError("--data is required (a folder prepared by `wsss data prepare`)")
    data = open_dataset(cfg.data)
    if cfg.split is None:
        raise UserError(f"--split is required (splits of {cfg.data}: {', '.join(data.splits())})")
    split_ids = data.ids(cfg.split)
    source = open_source(cfg)
    target = _metrics_path(cfg, source)
    ids, missing, skipped = split_items(source.folder, source.kind, cfg.split, split_ids, source.option,
                                        source.manifest, cfg.allow_missing)
    gts = mask_paths(data, cfg.split, ids)
    class_names = [BACKGROUND, *data.classes]
    n = len(class_names)
    workers = cfg.workers if cfg.workers is not None else min(os.cpu_count() or 1, 8)
    jobs = [(i, g, source.folder / f"{i}{source.suffix}") for i, g in zip(ids, gts)]
    start = time.perf_counter()
    matrix, background, curve = _count(cfg, source, jobs, n, workers)
    LOG.info("eval: scored %d ids of '%s' in %.1f s with %d workers", len(ids), cfg.split,
             time.perf_counter() - start, workers)
    metrics = {"kind": "metrics", "stage": "eval", "wsss_version": __version__, "config": to_dict(cfg),
               "inputs": {"data": input_record(cfg.data), source.option[2:]: input_record(source.folder)},
               "input_kind": source.kind, "input_has_manifest": source.manifest is not None,
               "split": cfg.split, "num_items": len(ids), "num_split_items": len(split_ids),
               "missing": {"count": len(missing), "ids": missing}, "skipped_outside_split": skipped,
               "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "class_names": class_names}
    if background:
        metrics["background"] = background
    metrics.update(_scores(matrix))
    if curve is not None:
        metrics["curve"] = curve
    write_json_atomic(target, metrics)
    LOG.info("eval: wrote %s", target)
    return metrics


def _percent(value: Optional[float]) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_report(metrics: dict) -> str:
    """Per-class table (IoU, precision, recall in %) and the summary line with both mIoUs."""
    names = metrics["class_names"]
    width = max(len(s) for s in names)
    lines = [f"{'class':>{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}"]
    for k, name in enumerate(names):
        lines.append(f"{name:>{width}}  {_percent(metrics['iou'][k])}  {_percent(metrics['precision'][k])}  "
                     f"{_percent(metrics['recall'][k])}")
    lines.append("-" * len(lines[0]))
    curve = metrics.get("curve")
    if curve is not None:
        lines.append(f"curve: best background threshold {curve['best_threshold']:g} of {len(curve['thresholds'])} "
                     f"({curve['thresholds'][0]:g}..{curve['thresholds'][-1]:g}), tuned on the ground truth")
    missing = metrics["missing"]["count"]
    lines.append(f"mIoU {_percent(metrics['miou']).strip()}% ({len(names)} classes, with background), "
                 f"{_percent(metrics['miou_foreground']).strip()}% ({len(names) - 1} foreground), pixel accuracy "
                 f"{_percent(metrics['pixel_accuracy']).strip()}%; {metrics['num_items']} ids of "
                 f"'{metrics['split']}'" + (f", {missing} missing" if missing else ""))
    return "\n".join(lines)


class EvalStage:
    """``eval`` as a pipeline stage (its command is hand-written: it also prints the per-class report)."""

    name, config = "eval", EvalConfig

    @staticmethod
    def run(cfg: EvalConfig) -> dict:
        return run(cfg)


STAGE = EvalStage()
