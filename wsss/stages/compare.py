"""``wsss compare``: one table of every evaluated artifact in some runs (methods x stages, one split per table).

It reads the ``metrics.json`` files that ``wsss eval`` wrote under each run folder, the manifest of each
evaluated artifact (which stage made it) and the run's ``pipeline.json`` (which method). Results on different
splits are never mixed in one table, and results on different datasets are refused unless asked for.

Final-segmentation rows (``seg infer`` artifacts) carry the settings their number depends on, so that a raw and a
CRF number, or a COCO- and an ImageNet-initialised network, are never compared unknowingly: ``init`` (the
``--init-weights`` file name of the ``seg train`` run behind ``--weights``, ``none`` for a network trained from
scratch, ``? (FILE)`` for weights not from ``seg train``), ``MS/flip`` (scales, flip, and the fuse rule when more
than one input is merged) and ``CRF`` (``no``, or its parameters and image). They come from the manifests along the
inputs chain (metrics -> artifact -> checkpoint run); ``?`` marks a manifest missing or rewritten since it was
recorded (its settings may not be the evaluated ones). Other rows leave the three columns empty.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Optional

from wsss.artifacts import MANIFEST
from wsss.artifacts.manifest import manifest_digest
from wsss.errors import UserError
from wsss.stages.table import compare_order


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    runs: tuple = ()
    split: Optional[str] = None
    all_splits: bool = False
    allow_mixed_data: bool = False
    format: str = "text"


@dataclasses.dataclass
class Row:
    method: str
    stage: str
    evaluated: str
    split: str
    miou: Optional[float]
    miou_fg: Optional[float]
    threshold: Optional[float]
    background: str
    dataset: str
    path: str
    init: str = ""
    ms_flip: str = ""
    crf: str = ""


def _method(run: Path) -> str:
    p = run / "pipeline.json"
    if p.is_file():
        try:
            return json.loads(p.read_text()).get("name") or run.name
        except ValueError:
            pass
    return run.name


def _manifest(record: dict) -> tuple[Optional[dict], bool]:
    """The manifest of an input record's folder, and whether it is the one recorded (same digest)."""
    if not record.get("path"):
        return None, False
    path = Path(record["path"])
    folder = path if path.is_dir() else path.parent
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None, False
    if not isinstance(manifest, dict):
        return None, False
    recorded = record.get("manifest_sha256")
    return manifest, recorded is None or recorded == manifest_digest(folder)


def _init(record: dict) -> str:
    """The init file name of the ``seg train`` run whose checkpoint ``record`` names (see the module docstring)."""
    run, fresh = _manifest(record)
    if run is None or run.get("stage") != "seg_train":
        return f"? ({Path(record['path']).name})" if record.get("path") else "?"
    if not fresh:
        return "?"
    init = (run.get("inputs", {}).get("init_weights") or {}).get("path") or run.get("config", {}).get("init_weights")
    return Path(init).name if init else "none"


def _ms_flip(config: dict) -> str:
    """``1``, ``0.5,1,1.5 + flip, mean``, ``short 520: 1``: the inputs of a seg infer artifact."""
    scales = config.get("scales") or [1.0]
    text = ",".join(f"{float(x):g}" for x in scales) + (" + flip" if config.get("flip") else "")
    if len(scales) > 1 or config.get("flip"):
        text += f", {config.get('fuse', '?')}"
    return f"short {config['short_side']}: {text}" if config.get("short_side") else text


def _crf(config: dict) -> str:
    """``no``, or ``1/3+67/3/4 x10 deeplab_pytorch``: Gaussian sxy/compat + bilateral sxy/srgb/compat x iterations,
    and the CRF's image."""
    if not config.get("crf"):
        return "no"
    p = [f"{float(x):g}" for x in config.get("crf_params") or ()]
    if len(p) != 6:
        return "?"
    return f"{p[0]}/{p[1]}+{p[2]}/{p[3]}/{p[4]} x{p[5]} {config.get('crf_image', '?')}"


def seg_settings(source: dict) -> tuple[str, str, str]:
    """(init, MS/flip, CRF) of the evaluated artifact that ``source`` (the metrics' input record) names; empty
    strings for artifacts other than ``seg infer``'s."""
    manifest, fresh = _manifest(source)
    if manifest is None or manifest.get("stage") != "seg_infer":
        return "", "", ""
    if not fresh:
        return "?", "?", "?"
    config = manifest.get("config", {})
    return _init(manifest.get("inputs", {}).get("weights") or {}), _ms_flip(config), _crf(config)


def _row(run: Path, metrics_path: Path) -> Optional[Row]:
    try:
        m = json.loads(metrics_path.read_text())
    except ValueError:
        raise UserError(f"{metrics_path}: not valid JSON") from None
    if m.get("kind") != "metrics":
        return None
    source = next((v for k, v in m.get("inputs", {}).items() if k != "data"), {}) or {}
    manifest, _ = _manifest(source)
    stage = (manifest or {}).get("stage", m.get("input_kind", "?"))
    curve = m.get("curve") or {}
    bg = m.get("background", {})
    background = (f"(1-max)^{bg['alpha']:g}" if bg.get("mode") == "power" else
                  f"const {bg['threshold']:g}" if bg.get("mode") == "constant" else "")
    data = m.get("inputs", {}).get("data", {})
    init, ms_flip, crf = seg_settings(source)
    return Row(method=_method(run), stage=stage, evaluated=metrics_path.parent.name, split=m.get("split", "?"),
               miou=m.get("miou"), miou_fg=m.get("miou_foreground"), threshold=curve.get("best_threshold"),
               background=background, dataset=str(data.get("manifest_sha256") or data.get("path")),
               path=str(metrics_path), init=init, ms_flip=ms_flip, crf=crf)


def collect(runs) -> list[Row]:
    rows = []
    for run in map(Path, runs):
        if not run.is_dir():
            raise UserError(f"{run}: no such run folder")
        found = sorted(p for depth in ("metrics.json", "*/metrics.json", "*/*/metrics.json") for p in run.glob(depth))
        rows += [r for r in (_row(run, p) for p in found) if r is not None]
    return rows


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def format_rows(rows: list[Row], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dataclasses.asdict(r) for r in rows], indent=1)
    header = ["method", "stage", "evaluated", "split", "mIoU", "mIoU fg", "best thr", "background", "init",
              "MS/flip", "CRF"]
    table = [[r.method, r.stage, r.evaluated, r.split, _pct(r.miou), _pct(r.miou_fg),
              "" if r.threshold is None else f"{r.threshold:g}", r.background, r.init, r.ms_flip, r.crf]
             for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return buf.getvalue().rstrip("\n")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def run(cfg: CompareConfig) -> dict[str, list[Row]]:
    """Rows grouped by split. Raises UserError for mixed datasets, or mixed splits without a choice."""
    if cfg.format not in ("text", "csv", "json"):
        raise UserError(f"--format must be text, csv or json, got {cfg.format!r}")
    rows = collect(cfg.runs)
    if not rows:
        raise UserError(f"no metrics.json (from `wsss eval`) found in {', '.join(map(str, cfg.runs))}")
    datasets = sorted({r.dataset for r in rows})
    if len(datasets) > 1 and not cfg.allow_mixed_data:
        raise UserError(f"the runs were evaluated on {len(datasets)} different datasets; refusing to compare "
                        f"them (use --allow-mixed-data to list them anyway)")
    splits = sorted({r.split for r in rows})
    if cfg.split is not None:
        if cfg.split not in splits:
            raise UserError(f"--split {cfg.split}: no results on that split (found: {', '.join(splits)})")
        splits = [cfg.split]
    elif len(splits) > 1 and not cfg.all_splits:
        raise UserError(f"results on several splits ({', '.join(splits)}): choose one with --split, or "
                        f"--all-splits for one table per split")
    grouped = {}
    for s in splits:
        grouped[s] = sorted((r for r in rows if r.split == s), key=lambda r: (r.method, compare_order(r.stage),
                                                                               r.evaluated))
    return grouped
