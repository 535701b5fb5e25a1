"""A hand-built VOC + SBD tree with known ids and masks, written without the toy generator.

Ids and roles::

    VOC train  a1 a2 a3          VOC val  b1 b2
    SBD train  a2 b1 s1          SBD val  a3 b2 s2
    => train_aug = a1 a2 a3 s1 s2   (b1, b2 are VOC val: left out)

Masks are 6 x 8. Every VOC mask has class ``1 + index % NUM_CLASSES`` in its left half, 255 on column 4 and 0
elsewhere; every SBD mask has class 3 everywhere in its left half (no 255), so "VOC wins" is visible on a2, a3.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from wsss.data.palette import write_label_png

NUM_CLASSES = 3
CLASSES = ("cat", "dog", "fox")
VOC_TRAIN, VOC_VAL = ["a1", "a2", "a3"], ["b1", "b2"]
SBD_TRAIN, SBD_VAL = ["a2", "b1", "s1"], ["a3", "b2", "s2"]
TRAIN_AUG = ["a1", "a2", "a3", "s1", "s2"]
H, W = 6, 8


def voc_mask(index: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[:, :4] = 1 + index % NUM_CLASSES
    m[:, 4] = 255
    return m


def sbd_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[:, :4] = 3
    return m


def write_tiny_tree(root: Path) -> tuple[Path, Path]:
    """Write the tree; returns (VOCdevkit/VOC2012, benchmark_RELEASE)."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    sbd = Path(root) / "benchmark_RELEASE" / "dataset"
    for d in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
              sbd / "img", sbd / "cls"):
        d.mkdir(parents=True, exist_ok=True)
    rgb = np.full((H, W, 3), 128, np.uint8)
    for n, i in enumerate(VOC_TRAIN + VOC_VAL):
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{i}.jpg")
        write_label_png(voc / "SegmentationClass" / f"{i}.png", voc_mask(n))
    for i in SBD_TRAIN + SBD_VAL:
        Image.fromarray(rgb).save(sbd / "img" / f"{i}.jpg")
        seg = sbd_mask()
        scipy.io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {
            "Segmentation": seg, "CategoriesPresent": np.array([[3]], np.uint8)}})
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (lists / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, sbd.parent
