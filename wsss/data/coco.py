"""``wsss data prepare coco``: MS-COCO 2014 as WSSS uses it, from the official release layout.

Input (``--coco-root``)::

    train2014/COCO_train2014_{12-digit id}.jpg   val2014/COCO_val2014_{12-digit id}.jpg   (or images/train2014/...)
    annotations/instances_train2014.json         annotations/instances_val2014.json

The prepared folder (layout of :mod:`wsss.data.prepare` + ``images.json``, see :mod:`wsss.data.dataset_writer`):

* classes: the JSON's categories in category-id order, labels 1..80 (the 91 -> 80 gaps removed), 0 background;
  the colours are the VOC colour map (distinct for all 256 labels), recorded in the manifest with the names and
  the COCO ``category_ids`` of the labels.
* ``masks/{id}.png``: the community convention (ReCAM's ``annToMask``, the masks the field's COCO numbers use):
  non-crowd annotations rasterised by pycocotools, in the JSON's order, later ones overwriting earlier ones;
  crowd regions stay background (``--crowd background``, the default) or become 255 (``--crowd ignore``, under
  the objects). The rule is in the manifest's ``mask_rule`` and in the folder's identity.
* image labels: the classes present in the mask (a category seen only as crowd, or wholly covered by later
  objects, is not in the label).
* ``splits/train.txt``, ``splits/val.txt``: the images with at least one labelled pixel (82,081 / 40,137 of
  82,783 / 40,504 on the real release), as bare 12-digit ids (``000000057870``), WS-FCN's list form.

Resumable (masks already written are kept) and idempotent (a complete folder of the same inputs: nothing to do).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from wsss.artifacts import Manifest, OutputDir, read_manifest
from wsss.data.dataset_writer import base_extra, default_workers, mask_job, run_jobs, write_prepared
from wsss.data.palette import IGNORE_INDEX, VOC_PALETTE
from wsss.data.prepare import KIND, MASKS_DIR
from wsss.errors import UserError
from wsss.process import LOG

STAGE = "data_prepare_coco"
SPLITS = {"train": "train2014", "val": "val2014"}
CROWD_RULES = ("background", "ignore")
# On the real release: images in the JSON -> images kept in the WSSS lists (WS-FCN's train14_new / val14_new).
REAL_COUNTS = {"train": (82783, 82081), "val": (40504, 40137)}


def coco_id(image_id: int) -> str:
    """The id form of the prepared lists: the 12-digit zero-padded COCO image id, e.g. ``000000057870``."""
    return f"{int(image_id):012d}"


def find_coco_root(path: Path) -> Path:
    """``--coco-root``: the folder holding ``annotations/``; UserError when it is not there."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--coco-root {path}: no such folder (expected train2014/, val2014/, annotations/)")
    if not (path / "annotations").is_dir():
        raise UserError(f"--coco-root {path}: no annotations/ folder (expected annotations/instances_train2014.json "
                        f"and instances_val2014.json of the COCO 2014 release)")
    return path.resolve()


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Rasterise one annotation's ``segmentation`` with pycocotools, as ``COCO.annToMask`` does.

    Args:
        segmentation: a list of polygons ``[x1, y1, x2, y2, ...]``, an uncompressed RLE ``{"counts": [...],
            "size": [h, w]}`` (crowd annotations) or a compressed one (``counts`` a string).

    Returns:
        bool (height, width).
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"an RLE of size {list(mask.shape)} on an image of {height}x{width}")
    return mask.astype(bool)


def rasterise(annotations: list, height: int, width: int, crowd: str = "background") -> np.ndarray:
    """The class mask of one image from its annotations (see the module docstring for the rule).

    Args:
        annotations: ``(label 1..C, iscrowd, segmentation)`` in the JSON's order.
        crowd: ``background`` (crowd regions stay 0) or ``ignore`` (255 where no object covers them).

    Returns:
        uint8 (height, width): 0 background, 1..C, 255 ignore.
    """
    if crowd not in CROWD_RULES:
        raise ValueError(f"crowd must be one of {CROWD_RULES}, got {crowd!r}")
    mask = np.zeros((height, width), np.uint8)
    if crowd == "ignore":
        for _, iscrowd, segmentation in annotations:
            if iscrowd:
                mask[annotation_mask(segmentation, height, width)] = IGNORE_INDEX
    for label, iscrowd, segmentation in annotations:
        if not iscrowd:
            mask[annotation_mask(segmentation, height, width)] = label
    return mask


def build_mask(image_path: str, height: int, width: int, annotations: list, crowd: str) -> np.ndarray:
    """A worker's job: check the image against the JSON's size, then :func:`rasterise` (errors name the file)."""
    try:
        with Image.open(image_path) as img:
            size = img.size
    except OSError as e:
        raise UserError(f"{image_path}: cannot read the image ({e})") from None
    if size != (width, height):
        raise UserError(f"{image_path}: the image is {size[0]}x{size[1]} but the annotations say {width}x{height}")
    try:
        return rasterise(annotations, height, width, crowd)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{image_path}: cannot rasterise its annotations ({e})") from None


@dataclass
class Instances:
    """One ``instances_*.json``: categories ``(id, name)`` in id order, images ``(id, file_name, height, width)``
    in the JSON's order, and annotations ``(category id, iscrowd, segmentation)`` by image id."""

    categories: list
    images: list
    annotations: dict


def read_instances(path: Path) -> Instances:
    """Read an instances JSON (the large one takes tens of seconds and a few GB of memory).

    Raises:
        UserError: missing or malformed file, or annotations naming an unknown image or category.
    """
    LOG.info("reading %s", path)
    try:
        d = json.loads(Path(path).read_text())
        categories = sorted((int(c["id"]), str(c["name"])) for c in d["categories"])
        images = [(int(im["id"]), str(im["file_name"]), int(im["height"]), int(im["width"])) for im in d["images"]]
        known, cats = {im[0] for im in images}, {c for c, _ in categories}
        by_image: dict[int, list] = {}
        for ann in d["annotations"]:
            image, cat = int(ann["image_id"]), int(ann["category_id"])
            if image not in known or cat not in cats:
                what = f"image id {image}" if image not in known else f"category id {cat}"
                raise UserError(f"{path}: annotation {ann.get('id')} names an unknown {what}")
            by_image.setdefault(image, []).append((cat, bool(ann.get("iscrowd", 0)), ann["segmentation"]))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (expected in the COCO 2014 release's annotations/)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    return Instances(categories, images, by_image)


def _instance_files(root: Path) -> dict[str, Path]:
    """split -> its ``annotations/instances_*.json``, for the splits whose file is there (at least one, each
    with its image folder)."""
    files = {s: root / "annotations" / f"instances_{SPLITS[s]}.json" for s in SPLITS}
    files = {s: p for s, p in files.items() if p.is_file()}
    if not files:
        raise UserError(f"--coco-root {root}: neither annotations/instances_train2014.json nor "
                        f"annotations/instances_val2014.json is there")
    for split in files:
        _image_folder(root, split)
    return files


def _image_folder(root: Path, split: str) -> Path:
    for folder in (root / SPLITS[split], root / "images" / SPLITS[split]):
        if folder.is_dir():
            return folder
    raise UserError(f"--coco-root {root}: no {SPLITS[split]}/ folder (or images/{SPLITS[split]}/) for "
                    f"annotations/instances_{SPLITS[split]}.json")


def mask_rule(crowd: str) -> dict:
    """The ``mask_rule`` a prepared COCO folder records, part of its identity (two rules never share a folder)."""
    if crowd not in CROWD_RULES:
        raise UserError(f"--crowd {crowd}: expected one of {', '.join(CROWD_RULES)}")
    return {"annotations": "non-crowd, pycocotools annToMask", "overlap": "later_wins", "crowd": crowd,
            "labels": "classes present in the mask"}


def prepare_coco(coco_root: Path, out: Optional[Path] = None, *, crowd: str = "background",
                 workers: Optional[int] = None, overwrite: bool = False) -> Manifest:
    """Prepare COCO 2014 into ``out``; see the module docstring for the layout and the rules.

    Args:
        coco_root: the folder holding ``annotations/``, ``train2014/`` and ``val2014/``.
        out: the prepared folder to write (required).
        crowd: ``background`` (community convention) or ``ignore`` (crowd regions 255).
        workers: processes writing masks (0 or 1: here; None: CPUs, at most 8).
        overwrite: replace whatever ``out`` holds.

    Returns:
        The manifest; ``extra["splits"][name]`` counts ``images`` (in the JSON), ``ids`` (kept),
        ``no_annotations`` and ``no_objects`` (annotated, but no labelled pixel: only crowd, or empty).

    Raises:
        UserError: missing files, bad JSON, a missing or mis-sized image, train/val categories differ, a busy ``out``.
    """
    if out is None:
        raise UserError("prepare coco: --out is required (the prepared dataset folder to write)")
    rule = mask_rule(crowd)
    root = find_coco_root(coco_root)
    files = _instance_files(root)
    inputs = {p.name: {"path": str(p), "bytes": p.stat().st_size} for p in files.values()}
    out_dir = OutputDir.open(out, kind=KIND, stage=STAGE, config={"coco_root": str(root), "mask_rule": rule},
                             inputs=inputs, overwrite=overwrite)
    if out_dir.state == "done":
        LOG.info("%s: already prepared from the same inputs and rule; nothing to do", out)
        return read_manifest(out, KIND)
    (out_dir.folder / MASKS_DIR).mkdir(exist_ok=True)
    workers = default_workers() if workers is None else workers
    categories, splits, labels, images, counts = None, {}, {}, {}, {}
    for split, path in files.items():
        inst = read_instances(path)
        if categories is not None and inst.categories != categories:
            raise UserError(f"{path}: its categories differ from those of {files['train']}")
        categories = inst.categories
        split_labels, split_files, counts[split] = _prepare_split(out_dir, root, split, inst, crowd, workers)
        del inst
        clash = sorted(set(split_labels) & set(labels))
        if clash:
            raise UserError(f"{path}: image id {clash[0]} is also in {files['train']}")
        splits[split] = sorted(i for i, c in split_labels.items() if c)
        labels.update({i: split_labels[i] for i in splits[split]})
        images.update({i: split_files[i] for i in splits[split]})
    extra = base_extra("coco", [n for _, n in categories], VOC_PALETTE, root, "masks", rule)
    extra.update(category_ids=[c for c, _ in categories], splits=counts)
    return write_prepared(out_dir, splits, labels, images, extra)


def _prepare_split(out_dir: OutputDir, root: Path, split: str, inst: Instances, crowd: str,
                   workers: int) -> tuple[dict, dict, dict]:
    """Masks of one split's annotated images -> ({id: classes}, {id: image path under root}, counts)."""
    if len(inst.categories) > IGNORE_INDEX - 1:
        raise UserError(f"instances_{SPLITS[split]}.json: {len(inst.categories)} categories; at most 254 fit in "
                        f"a label PNG beside 0 and 255")
    label_of = {cat: n for n, (cat, _) in enumerate(inst.categories, start=1)}
    folder = _image_folder(root, split).relative_to(root)
    files, jobs, palette = {}, [], bytes(VOC_PALETTE)
    for image_id, file_name, height, width in inst.images:
        i = coco_id(image_id)
        files[i] = (folder / file_name).as_posix()
        anns = inst.annotations.get(image_id)
        if anns:
            anns = [(label_of[c], iscrowd, seg) for c, iscrowd, seg in anns]
            jobs.append((out_dir, i, len(label_of), palette, False, build_mask, str(root / files[i]), height, width,
                         anns, crowd))
    missing = [job[6] for job in jobs if not Path(job[6]).is_file()]
    if missing:
        raise UserError(f"{root / folder}: {len(missing)} annotated images are missing (first: {missing[0]})")
    LOG.info("%s: %d images, %d with annotations: writing their masks on %d worker(s)", split, len(inst.images),
             len(jobs), max(workers, 1))
    labels = dict(zip((job[1] for job in jobs), run_jobs(mask_job, jobs, workers)))
    kept = sum(1 for c in labels.values() if c)
    counts = {"images": len(inst.images), "ids": kept, "no_annotations": len(inst.images) - len(jobs),
              "no_objects": len(jobs) - kept}
    real = REAL_COUNTS[split]
    if counts["images"] == real[0] and kept != real[1]:
        LOG.warning("%s: %d images kept; the WSSS lists of the real release keep %d", split, kept, real[1])
    return labels, files, counts
