"""``wsss demo``: the whole job on built-in toy data, on CPU, in a few minutes.

1. Writes the toy data in the real VOC/SBD layouts (``OUT/toy``) and prepares it (``OUT/data``), or reuses them.
2. Runs every toy recipe of ``pipelines/`` (``toy_*.yaml``: tiny backbone, trained here from scratch), each into
   ``OUT/runs/<recipe>``; every stage is evaluated on toy train and toy val. A stage identical to a complete one
   of an earlier recipe (same config and inputs: the toy classifier that several recipes start from) is copied
   from it (``wsss pipeline run --reuse``).
3. Prints the comparison table (one per split) and writes ``OUT/report/index.html``: the table, the table as a
   chart and the CAMs' background-threshold curves (matplotlib, PNG and SVG: :mod:`wsss.stages.demo_plots`), and
   for a few val ids the input, ground truth, and the output of every recipe stage marked ``report: TITLE`` (CAM
   heat maps, labels), under a legend of the class colours. ``tests/stages/test_demo_browser.py`` (slow) opens it
   in headless Chromium.

Nothing is precomputed: the numbers are what this machine trained. A rerun reuses every complete stage.
"""
from __future__ import annotations

import dataclasses
import html
from pathlib import Path
from typing import Optional

import numpy as np

from wsss.artifacts import MANIFEST
from wsss.config import runtime
from wsss.errors import UserError
from wsss.process import LOG, setup_logging

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("wsss-demo")
    n_train: int = 200
    n_val: int = 50
    size: int = 112
    seed: int = 0
    recipes: tuple = ()  # recipe names or files; empty = every pipelines/toy_*.yaml
    report_images: int = 6
    device: str = runtime("auto")
    workers: int = runtime(0)


def recipe_path(name: str) -> Path:
    """A recipe by file path, or by name from the repository's ``pipelines/`` folder."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    p = PIPELINES / f"{name}.yaml"
    if not p.is_file():
        raise UserError(f"recipe {name!r}: not found (looked for {p})")
    return p


def demo_recipes(cfg: "DemoConfig") -> list[Path]:
    """The recipes the demo runs: ``cfg.recipes``, or every toy recipe of ``pipelines/``."""
    return [recipe_path(r) for r in cfg.recipes] if cfg.recipes else sorted(PIPELINES.glob("toy_*.yaml"))


def report_columns(recipes: list[Path], runs: Path) -> list[tuple[str, Path]]:
    """(title, stage folder) of every recipe stage marked ``report: TITLE``, in recipe order."""
    from wsss.stages.pipeline_run import load_recipe

    return [(stage["report"], runs / recipe.stem / stage["name"])
            for recipe in recipes for stage in load_recipe(recipe)["stages"] if stage.get("report")]


def ensure_toy_data(cfg: DemoConfig) -> Path:
    """Toy data written and prepared under ``cfg.out`` (reused when already complete)."""
    from wsss.data.prepare import prepare_voc
    from wsss.data.toy import write_toy

    raw, data = Path(cfg.out) / "toy", Path(cfg.out) / "data"
    if (data / MANIFEST).is_file():
        LOG.info("demo: reusing the toy data in %s", data)
        return data
    LOG.info("demo: writing toy data (%d train, %d val, %d px) to %s", cfg.n_train, cfg.n_val, cfg.size, raw)
    write_toy(raw, n_train=cfg.n_train, n_val=cfg.n_val, size=cfg.size, seed=cfg.seed)
    prepare_voc(voc_root=raw / "VOCdevkit" / "VOC2012", sbd_root=raw / "benchmark_RELEASE", out=data)
    return data


REPORT_STYLE = ("<style>.swatch{display:inline-block;width:14px;height:14px;margin-right:4px;vertical-align:middle;"
                "border:1px solid #888}.heat{width:60px;background:linear-gradient(to right,rgb(30,60,200),"
                "rgb(250,220,40),rgb(220,30,30))}.chart{width:auto;max-width:100%}</style>")


def _charts(out: Path, grouped: dict) -> str:
    """The mIoU chart and the CAM threshold curves (PNG + SVG in ``out``), as HTML."""
    from wsss.stages.demo_plots import miou_chart, threshold_curves

    parts = []
    for caption, names in (("mIoU per method and stage", miou_chart(grouped, out / "miou")),
                           ("CAM background-threshold curves", threshold_curves(grouped, out / "cam_thresholds"))):
        if names:
            png, svg = names
            parts.append(f"<h2>{caption}</h2><p><img class='chart' src='{png}' alt='{caption}'> "
                         f"(<a href='{svg}'>SVG</a>)</p>")
    return "".join(parts)


def _label_values(kind: Optional[str], folder: Path, image_id: str) -> set:
    """Label values of one item of a ``label`` artifact (empty for CAMs and missing items)."""
    from wsss.artifacts.items import FORMATS

    path = FORMATS["label"].path(folder, image_id) if kind == "label" else None
    return set(np.unique(FORMATS["label"].read(path)).tolist()) if path is not None and path.is_file() else set()


def write_report(cfg: DemoConfig, data_path: Path, tables: str, columns: list[tuple[str, Path]],
                 grouped: Optional[dict] = None) -> Path:
    """``OUT/report/index.html``: the table, its charts, and per id the image, its ground truth and each report
    column's output, with a legend of the class colours."""
    from wsss.artifacts import read_manifest
    from wsss.data.prepared import open_dataset
    from wsss.stages.demo_plots import legend_html
    from wsss.stages.viz import artifact_overlay, label_overlay, save_png, write_html

    data = open_dataset(data_path)
    out = Path(cfg.out) / "report"
    out.mkdir(parents=True, exist_ok=True)
    kinds = [read_manifest(folder).kind if (folder / MANIFEST).is_file() else None for _, folder in columns]
    rows, shown = [], {0}
    for image_id in data.ids("val")[:cfg.report_images]:
        image, mask = data.read_image(image_id), data.read_mask(image_id)
        shown |= set(np.unique(mask).tolist())
        cells = [save_png(out / f"{image_id}_image.png", image),
                 save_png(out / f"{image_id}_gt.png", label_overlay(image, mask, data.palette))]
        for (_, folder), kind in zip(columns, kinds):
            overlay = artifact_overlay(kind, folder, image_id, image, data.palette) if kind else None
            shown |= _label_values(kind, folder, image_id)
            name = f"{image_id}_{folder.parent.name}_{folder.name}.png"
            cells.append(save_png(out / name, overlay) if overlay is not None else None)
        rows.append((image_id, cells))
    page = out / "index.html"
    intro = f"{REPORT_STYLE}<pre>{html.escape(tables)}</pre>{_charts(out, grouped) if grouped else ''}"
    intro += f"<h2>val images</h2>{legend_html(data.classes, data.palette, shown)}"
    write_html(page, "wsss demo (toy data)", ["image", "ground truth", *(title for title, _ in columns)], rows,
               intro=intro)
    return page


def run(cfg: DemoConfig) -> tuple[str, Path]:
    """Run the demo; returns (comparison tables as text, path of the HTML report)."""
    from wsss.stages import compare, pipeline_run

    setup_logging()
    if min(cfg.n_train, cfg.n_val, cfg.size, cfg.report_images) < 1:
        raise UserError("--n-train, --n-val, --size and the number of report images must be >= 1")
    data = ensure_toy_data(cfg)
    runs, recipes = [], demo_recipes(cfg)
    for recipe in recipes:
        run_dir = Path(cfg.out) / "runs" / recipe.stem
        results = pipeline_run.run(pipeline_run.PipelineRunConfig(
            recipe=recipe, data=data, out=run_dir, device=cfg.device, workers=cfg.workers, reuse=tuple(runs)))
        LOG.info("demo: %s\n%s", recipe.stem, pipeline_run.format_results(results))
        runs.append(run_dir)
    grouped = compare.run(compare.CompareConfig(runs=tuple(runs), all_splits=True))
    tables = "\n\n".join(f"split {split}:\n{compare.format_rows(rows, 'text')}" for split, rows in grouped.items())
    (Path(cfg.out) / "comparison.txt").write_text(tables + "\n")
    return tables, write_report(cfg, data, tables, report_columns(recipes, Path(cfg.out) / "runs"), grouped)
