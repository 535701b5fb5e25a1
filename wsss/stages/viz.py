"""``wsss viz``: overlays of CAM or label artifacts on their images, as PNG files and one HTML page.

The same functions build the demo's report: :func:`cam_overlay`, :func:`label_overlay`, :func:`write_html`.
"""
from __future__ import annotations

import dataclasses
import html
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from wsss.artifacts import read_manifest
from wsss.artifacts.items import FORMATS
from wsss.data.palette import IGNORE_INDEX, VOC_PALETTE
from wsss.errors import UserError


@dataclasses.dataclass(frozen=True)
class VizConfig:
    data: Optional[Path] = None
    split: Optional[str] = None
    cams: Optional[Path] = None
    labels: Optional[Path] = None
    out: Optional[Path] = None
    limit: int = 12


def heat_colors(x: np.ndarray) -> np.ndarray:
    """A blue-to-red colour map for values in [0, 1]: (H, W) -> (H, W, 3) uint8."""
    x = np.clip(x, 0, 1)[..., None]
    blue, yellow, red = np.array([30, 60, 200.0]), np.array([250, 220, 40.0]), np.array([220, 30, 30.0])
    low = blue + (yellow - blue) * np.clip(2 * x, 0, 1)
    return np.where(x < 0.5, low, yellow + (red - yellow) * np.clip(2 * x - 1, 0, 1)).astype(np.uint8)


def cam_overlay(image: np.ndarray, cams: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The maximum over the CAM rows as a heat map blended on the image: uint8 (H, W, 3)."""
    heat = heat_colors(cams.max(axis=0) if len(cams) else np.zeros(image.shape[:2]))
    return (image * (1 - alpha) + heat * alpha).astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, palette: Sequence[int] = VOC_PALETTE,
                  alpha: float = 0.6) -> np.ndarray:
    """Label colours blended on the image (background and ignore keep more of the image): uint8 (H, W, 3)."""
    colors = np.asarray(palette, np.uint8).reshape(-1, 3)[labels]
    weight = np.where((labels == 0) | (labels == IGNORE_INDEX), alpha / 3, alpha)[..., None]
    return (image * (1 - weight) + colors * weight).astype(np.uint8)


def write_html(path: Path, title: str, columns: Sequence[str], rows: Sequence[tuple], intro: str = "") -> None:
    """An HTML table: ``rows`` are ``(id, [image path relative to the page or None, ...])``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("id", *columns))
    body = []
    for image_id, images in rows:
        cells = "".join(f'<td><img src="{html.escape(str(p))}" alt="{html.escape(c)}"></td>' if p else "<td>-</td>"
                        for c, p in zip(columns, images))
        body.append(f"<tr><td>{html.escape(image_id)}</td>{cells}</tr>")
    Path(path).write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif} td,th{padding:4px;text-align:center} img{width:160px;"
        "image-rendering:pixelated} pre{background:#f4f4f4;padding:8px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{intro}<table><tr>{head}</tr>{''.join(body)}</table></body></html>\n")


def save_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return Path(path).name


def artifact_overlay(kind: str, folder: Path, image_id: str, image: np.ndarray, palette) -> Optional[np.ndarray]:
    """The overlay of one item of a ``cam`` or ``label`` artifact on its image, or None when it has no item."""
    fmt = FORMATS[kind]
    path = fmt.path(folder, image_id)
    if not path.is_file():
        return None
    if kind == "cam":
        return cam_overlay(image, fmt.read(path)[0])
    return label_overlay(image, fmt.read(path), palette)


def run(cfg: VizConfig) -> Path:
    """Overlays of ``cfg.cams`` or ``cfg.labels`` for the first ``limit`` ids of the split; returns index.html."""
    from wsss.data.prepared import open_dataset

    if (cfg.cams is None) == (cfg.labels is None):
        raise UserError("give exactly one of --cams DIR and --labels DIR")
    if cfg.data is None or cfg.split is None or cfg.out is None:
        raise UserError("--data, --split and --out are required")
    if cfg.limit < 1:
        raise UserError(f"--limit must be >= 1, got {cfg.limit}")
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    folder = Path(cfg.cams or cfg.labels)
    manifest = read_manifest(folder, kind="cam" if cfg.cams else "label")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    fmt = FORMATS[manifest.kind]
    for image_id in [i for i in ids if fmt.path(folder, i).is_file()][:cfg.limit]:
        image = data.read_image(image_id)
        overlay = artifact_overlay(manifest.kind, folder, image_id, image, data.palette)
        gt = label_overlay(image, data.read_mask(image_id), data.palette) if data.mask_path(image_id) else None
        rows.append((image_id, [save_png(out / f"{image_id}_image.png", image),
                                save_png(out / f"{image_id}_gt.png", gt) if gt is not None else None,
                                save_png(out / f"{image_id}_{manifest.kind}.png", overlay)]))
    if not rows:
        raise UserError(f"{folder}: no item of split '{cfg.split}' to show")
    page = out / "index.html"
    write_html(page, f"{manifest.stage}: {folder}", ["image", "ground truth", manifest.kind], rows)
    return page
