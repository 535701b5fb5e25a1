"""Label PNGs: the VOC colour palette and palette-PNG read/write (0 = background, 255 = ignore)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from wsss.ops import IGNORE_INDEX  # noqa: F401 - defined once, re-exported for the data layer


def voc_palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map: label ``i`` gets its colour from the bits of ``i`` spread over R, G, B.

    Returns a flat list of ``3 * n`` ints, as :meth:`PIL.Image.Image.putpalette` takes it. Label 255 is
    (224, 224, 192), the cream colour of the ignore band in VOC masks.
    """
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


VOC_PALETTE = voc_palette()


def write_label_png(path: Path, labels: np.ndarray, palette: Optional[Sequence[int]] = None) -> None:
    """Write ``labels`` (H, W) uint8 as a palette PNG (mode ``P``), with the VOC palette by default."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
            raise ValueError("labels must lie in [0, 255]")
        labels = labels.astype(np.uint8)
    img = Image.fromarray(labels, mode="P")
    img.putpalette(list(palette if palette is not None else VOC_PALETTE))
    img.save(path, format="PNG")


def read_label_png(path: Path) -> np.ndarray:
    """Read a label PNG as (H, W) uint8 label indices: palette PNGs give their indices, grayscale PNGs their values.

    An RGB PNG has no indices to read and raises ``ValueError``.
    """
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("I", "I;16", "I;16B"):  # 16/32-bit grayscale: kept only when every value fits in 8 bits
            values = np.array(img)
            if values.size and (values.min() < 0 or values.max() > 255):
                raise ValueError(f"{path}: a {img.mode} label PNG with values up to {int(values.max())} "
                                 f"(labels must lie in 0..255)")
            return values.astype(np.uint8)
        raise ValueError(f"{path}: a label PNG must be palette or grayscale, got mode {img.mode}")
