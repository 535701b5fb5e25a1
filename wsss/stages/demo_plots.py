"""The charts and the colour legend of ``wsss demo``'s report, drawn with matplotlib (PNG and SVG).

* :func:`miou_chart`: the comparison table as bars, one panel per split, one group per method, one bar per
  evaluated stage, coloured by its role (CAM, pseudo labels, final segmentation).
* :func:`threshold_curves`: mIoU against the constant background threshold, one line per CAM artifact swept with
  ``eval --curve`` (its best point marked: an oracle choice on the ground truth, as the table says).
* :func:`legend_html`: the class colours of the label overlays, and the CAM heat scale.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FINAL_STAGES = ("single_infer", "seg_infer")  # stages whose labels are a trained segmentation network's output
ROLE_COLOURS = {"CAM": "#4c72b0", "pseudo labels": "#dd8452", "final": "#55a868"}


def stage_role(row) -> str:
    """A ``wsss compare`` row's role: ``CAM`` (CAMs scored with a background), ``final`` or ``pseudo labels``."""
    if row.background:
        return "CAM"
    return "final" if row.stage in FINAL_STAGES else "pseudo labels"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "wsss-demo"  # fixed SVG ids: the same run gives the same bytes
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> list[str]:
    """Write ``stem.png`` and ``stem.svg``; returns their file names."""
    names = []
    for ext in ("png", "svg"):
        fig.savefig(stem.with_suffix(f".{ext}"), dpi=100, bbox_inches="tight", metadata=_METADATA[ext])
        names.append(stem.with_suffix(f".{ext}").name)
    return names


# No dates or versions in the files, so that the same run gives the same bytes.
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def miou_chart(grouped: dict, stem: Path) -> list[str]:
    """Bars of mIoU (%) per method and evaluated stage, one panel per split; ``grouped``: split -> compare rows."""
    plt = _pyplot()
    splits = list(grouped)
    height = max(len(rows) for rows in grouped.values())
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 1.2 + 0.32 * height), squeeze=False,
                             sharex=True)
    for ax, split in zip(axes[0], splits):
        rows = [r for r in grouped[split] if r.miou is not None][::-1]
        labels = [f"{r.method}  {r.evaluated}" for r in rows]
        values = [100 * r.miou for r in rows]
        ax.barh(range(len(rows)), values, color=[ROLE_COLOURS[stage_role(r)] for r in rows])
        for y, v in enumerate(values):
            ax.text(v + 0.5, y, f"{v:.1f}", va="center", fontsize=8)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xlim(0, 105)
        ax.set_xlabel("mIoU (%)")
        ax.set_title(f"split {split}")
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLOURS.values()]
    fig.legend(handles, list(ROLE_COLOURS), loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    names = _save(fig, stem)
    plt.close(fig)
    return names


def load_curves(rows: Iterable) -> list[tuple[object, dict]]:
    """(row, curve) of every compare row whose ``metrics.json`` holds a threshold sweep."""
    found = []
    for row in rows:
        curve = json.loads(Path(row.path).read_text()).get("curve")
        if curve:
            found.append((row, curve))
    return found


def threshold_curves(grouped: dict, stem: Path) -> list[str]:
    """mIoU (%) against the background threshold of every swept CAM artifact, one panel per split.

    Returns the written file names, or ``[]`` when no CAM artifact was swept.
    """
    curves = {split: load_curves(rows) for split, rows in grouped.items()}
    curves = {split: found for split, found in curves.items() if found}
    if not curves:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False, sharey=True)
    for ax, (split, found) in zip(axes[0], curves.items()):
        for row, curve in found:
            miou = 100 * np.asarray(curve["miou"], float)
            line, = ax.plot(curve["thresholds"], miou, label=f"{row.method}  {row.evaluated}")
            ax.plot([curve["best_threshold"]], [100 * curve["best_miou"]], "o", color=line.get_color())
        ax.set_xlabel("background threshold")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"CAMs, split {split} (dot: best threshold on the ground truth)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    names = _save(fig, stem)
    plt.close(fig)
    return names


def legend_html(names: Sequence[str], palette: Sequence[int], values: Iterable[int]) -> str:
    """HTML swatches of the label colours of ``values`` (0 = background; ``k`` = ``names[k - 1]``) and the CAM scale.

    Args:
        names: foreground class names.
        palette: flat RGB palette (the dataset's).
        values: label values to show (255 and values past the classes are left out).
    """
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)
    items = []
    for v in sorted(set(int(v) for v in values)):
        if v > len(names):
            continue
        r, g, b = colours[v]
        name = "background" if v == 0 else names[v - 1]
        items.append(f"<span class='swatch' style='background:rgb({r},{g},{b})'></span>{html.escape(name)}")
    heat = ("<span class='swatch heat'></span>CAM (max over the image's classes): 0 blue, 0.5 yellow, 1 red")
    return "<p class='legend'>" + " &nbsp; ".join(items + [heat]) + "</p>"
