"""Synthetic data in the REAL MS-COCO 2014 release layout, so that ``wsss data prepare coco`` reads the real format.

:func:`write_toy_coco` writes, under ``root``::

    train2014/COCO_train2014_{12-digit id}.jpg
    val2014/COCO_val2014_{12-digit id}.jpg
    annotations/instances_train2014.json      the release's keys: info, licenses, images (id, file_name, height,
    annotations/instances_val2014.json        width, ...), annotations (id, image_id, category_id, segmentation,
                                              area, bbox, iscrowd), categories (80, real non-contiguous ids)

Images are drawn as in the VOC toy (:mod:`wsss.data.toy`: a grey body with a small class-specific part), over the
80 COCO classes. Annotations, for the image at position ``i`` of a split's ``n`` images (JSON order):

* each drawn object: one non-crowd annotation, two polygons (body ellipse and part disc, as COCO splits an
  occluded object), later objects on top; when ``i % 5 == 2`` the first one is a compressed RLE instead;
* ``i % 4 == 1``: also a crowd annotation (``iscrowd`` 1, uncompressed RLE) of ``person``, a band along the
  bottom edge, its texture drawn on the background pixels there;
* when ``n >= 3``: image ``n - 2`` carries only that crowd annotation and image ``n - 1`` no annotation at all,
  so both leave the prepared lists (:attr:`CocoToy.kept`).

Example:
    >>> toy = write_toy_coco("coco_toy", n_train=40, n_val=10, size=64, seed=0)
    >>> len(toy.kept["train"])
    38
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from wsss.data.toy_world import ToyObject, _ClassCycle, _draw_image, _label_maps, _part_texture
from wsss.errors import UserError

SPLIT_FOLDERS = {"train": "train2014", "val": "val2014"}
MAX_IMAGE_ID = 581929  # the largest image id of the 2014 release


@dataclass(frozen=True)
class CocoToy:
    """What :func:`write_toy_coco` wrote: every split's 12-digit ids in JSON order, and those the lists keep."""

    images: dict
    kept: dict


def uncompressed_rle(mask: np.ndarray) -> dict:
    """A bool (H, W) mask as COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def write_toy_coco(root: Path, n_train: int = 200, n_val: int = 50, size: int = 112, seed: int = 0) -> CocoToy:
    """Write a toy COCO 2014 release under ``root`` (see the module docstring for the layout and the roles).

    Args:
        root: folder that receives ``train2014/``, ``val2014/`` and ``annotations/`` (created if needed).
        n_train, n_val: images per split (>= 1).
        size: the long side of every image in pixels (>= 32).
        seed: everything is a function of the arguments.
    """
    if n_train < 1 or n_val < 1:
        raise UserError(f"toy data: --n-train and --n-val must be >= 1, got {n_train} and {n_val}")
    if size < 32:
        raise UserError(f"toy data: --size must be >= 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    ids = [int(i) + 1 for i in rng.choice(MAX_IMAGE_ID, size=n_train + n_val, replace=False)]
    cycle = _ClassCycle(rng, len(COCO_CLASSES))
    images, kept = {}, {}
    (Path(root) / "annotations").mkdir(parents=True, exist_ok=True)
    for split, split_ids in (("train", ids[:n_train]), ("val", ids[n_train:])):
        instances = _write_split(Path(root), split, split_ids, rng, size, cycle)
        path = Path(root) / "annotations" / f"instances_{SPLIT_FOLDERS[split]}.json"
        path.write_text(json.dumps(instances))
        images[split] = tuple(f"{i:012d}" for i in split_ids)
        annotated = {a["image_id"] for a in instances["annotations"] if not a["iscrowd"]}
        kept[split] = tuple(sorted(f"{i:012d}" for i in split_ids if i in annotated))
    return CocoToy(images=images, kept=kept)


def _write_split(root: Path, split: str, ids: list, rng: np.random.Generator, size: int,
                 cycle: _ClassCycle) -> dict:
    folder = SPLIT_FOLDERS[split]
    (root / folder).mkdir(parents=True, exist_ok=True)
    out = {"info": {"description": "wsss toy data in the COCO 2014 layout", "version": "1.0", "year": 2014},
           "licenses": [{"id": 1, "name": "toy", "url": ""}], "images": [], "annotations": [],
           "categories": [{"supercategory": "object", "id": c, "name": n}
                          for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]}
    n = len(ids)
    for i, image_id in enumerate(ids):
        image, objects = _draw_image(rng, size, cycle)
        h, w = image.shape[:2]
        file_name = f"COCO_{folder}_{image_id:012d}.jpg"
        out["images"].append({"license": 1, "file_name": file_name, "coco_url": "", "height": h, "width": w,
                              "date_captured": "2014-01-01 00:00:00", "flickr_url": "", "id": image_id})
        role = "none" if n >= 3 and i == n - 1 else "crowd_only" if n >= 3 and i == n - 2 else "objects"
        anns = [] if role != "objects" else [_object_annotation(o, h, w, rle=(k == 0 and i % 5 == 2))
                                             for k, o in enumerate(objects)]
        if role == "crowd_only" or (role == "objects" and i % 4 == 1):
            anns.append(_crowd_annotation(image, objects))
        for ann in anns:
            ann.update(id=len(out["annotations"]) + 1, image_id=image_id)
            out["annotations"].append(ann)
        Image.fromarray(image).save(root / folder / file_name, quality=92)
    return out


def _object_annotation(obj: ToyObject, h: int, w: int, rle: bool) -> dict:
    """Body ellipse + part disc as two polygons (pixel (x, y) covers [x, x + 1) x [y, y + 1)), or their RLE."""
    from pycocotools import mask as mask_utils

    polygons = [_ellipse(obj.cx, obj.cy, obj.rx, obj.ry, 24), _ellipse(obj.px, obj.py, obj.pr, obj.pr, 12)]
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    segmentation = polygons
    if rle:
        segmentation = {"counts": merged["counts"].decode("ascii"), "size": [h, w]}
    return {"category_id": COCO_CATEGORY_IDS[obj.cls], "segmentation": segmentation,
            "area": float(mask_utils.area(merged)), "bbox": [float(v) for v in mask_utils.toBbox(merged)],
            "iscrowd": 0}


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> list:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    xy = np.stack([cx + 0.5 + rx * np.cos(t), cy + 0.5 + ry * np.sin(t)], axis=1)
    return [round(float(v), 2) for v in xy.ravel()]


def _crowd_annotation(image: np.ndarray, objects: list) -> dict:
    """A ``person`` crowd: the bottom band of the image; its texture is drawn (in place) where no object is."""
    h, w = image.shape[:2]
    band = np.zeros((h, w), bool)
    band[h - max(4, h // 6):, : w // 2] = True
    free = band & (_label_maps(h, w, objects)[0] == 0)
    yy, xx = np.nonzero(free)
    image[free] = _part_texture(0, yy.astype(np.float32), xx.astype(np.float32)).astype(np.uint8)
    ys, xs = np.nonzero(band)
    return {"category_id": COCO_CATEGORY_IDS[0], "segmentation": uncompressed_rle(band),
            "area": float(band.sum()), "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1),
                                                float(np.ptp(ys) + 1)], "iscrowd": 1}
