"""Synthetic data in the REAL PASCAL VOC 2012 and SBD layouts, so that every test runs the real readers.

:func:`write_toy` writes, under ``root``::

    VOCdevkit/VOC2012/
        JPEGImages/{id}.jpg                 every image (VOC trainval and SBD-only ones, as in the real archive)
        Annotations/{id}.xml                VOC XML: filename, size, segmented, object/name/pose/truncated/
                                            difficult/bndbox for every object
        SegmentationClass/{id}.png          palette PNG, 0 = background, 1..20 = class, 255 band at borders
        SegmentationObject/{id}.png         palette PNG of instance numbers 1..n, same 255 band
        ImageSets/Segmentation/{train,val,trainval}.txt
    benchmark_RELEASE/dataset/
        img/{id}.jpg                        the SBD images
        cls/{id}.mat                        struct GTcls: Segmentation (uint8 H x W, 0..20, no 255 band),
                                            Boundaries (20 x 1 cell of sparse H x W maps), CategoriesPresent
                                            (n x 1, 1-based class numbers)
        inst/{id}.mat                       struct GTinst: Segmentation (instance numbers), Boundaries (n x 1
                                            cell), Categories (n x 1, class number of each instance)
        train.txt, val.txt

Ids look like the real ones (``2008_000123``). With ``T = n_train``, ``V = n_val`` and ``E = max(1, T // 2)``
SBD-only ids, the roles are (indices into each sorted list):

* VOC train ``t[i]``: not in SBD when ``i % 4 == 0``; in SBD val when ``i % 4 == 3``; else in SBD train.
* VOC val ``v[j]``: in SBD train when ``j % 4 == 0``; in SBD val when ``j % 4 == 2``; else not in SBD.
* SBD-only ``e[k]``: in SBD val when ``k % 3 == 2``; else in SBD train.

So ``train_aug = VOC train + SBD train + SBD val - VOC val`` has exactly ``T + E`` ids, some SBD ids (train and
val) are VOC val images that must be left out, and VOC-train ids in SBD carry an SBD mask that differs from the
VOC one (SBD's is one pixel coarser and has no 255 band), so "VOC's mask wins" is observable.

Images: what :mod:`wsss.data.toy_world` draws (a dark background; one or two bright near-grey bodies, each
carrying a part whose saturated colour identifies its class). ``classes`` of the 20 VOC classes are drawn (4 by
default, each about equally often, their part colours 90 degrees apart round the hue wheel, each in its own
pattern); the prepared dataset keeps the 20 VOC classes, the others simply never occur.

Example:
    >>> write_toy("toy", n_train=200, n_val=50, size=112, seed=0)   # a few seconds
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image
from scipy import ndimage

from wsss.data.classes import VOC_CLASSES
from wsss.data.palette import IGNORE_INDEX, write_label_png
from wsss.data.toy_world import DRAW_ORDER, NUM_CLASSES, ToyObject, _ClassCycle, _draw_image, _label_maps
from wsss.errors import UserError


@dataclass(frozen=True)
class ToySplits:
    """The ids :func:`write_toy` wrote, by role."""

    voc_train: tuple
    voc_val: tuple
    sbd_train: tuple
    sbd_val: tuple
    sbd_only: tuple


def write_toy(root: Path, n_train: int = 200, n_val: int = 50, size: int = 112, seed: int = 0,
              classes: int = 4) -> ToySplits:
    """Write a toy VOC 2012 + SBD tree under ``root`` (see the module docstring for the layout and roles).

    Args:
        root: folder that receives ``VOCdevkit/`` and ``benchmark_RELEASE/`` (created if needed).
        n_train: number of VOC ``train`` ids (>= 1).
        n_val: number of VOC ``val`` ids (>= 1).
        size: the long side of every image in pixels (>= 32); the short side is 75..100 % of it.
        seed: everything (ids, roles, images) is a function of the arguments.
        classes: how many of the 20 VOC classes the objects are drawn from (1..20), in ``DRAW_ORDER``.

    Returns:
        The ids by role.
    """
    if n_train < 1 or n_val < 1:
        raise UserError(f"toy data: --n-train and --n-val must be >= 1, got {n_train} and {n_val}")
    if size < 32:
        raise UserError(f"toy data: --size must be >= 32 pixels, got {size}")
    if not 1 <= classes <= NUM_CLASSES:
        raise UserError(f"toy data: the number of classes must lie in 1..{NUM_CLASSES}, got {classes}")
    rng = np.random.default_rng(seed)
    splits = _assign_roles(rng, n_train, n_val)
    voc, sbd = Path(root) / "VOCdevkit" / "VOC2012", Path(root) / "benchmark_RELEASE" / "dataset"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("img", "cls", "inst"):
        (sbd / sub).mkdir(parents=True, exist_ok=True)
    in_voc_seg = set(splits.voc_train) | set(splits.voc_val)
    in_sbd = set(splits.sbd_train) | set(splits.sbd_val)
    all_ids = sorted(in_voc_seg | in_sbd)
    class_cycle = _ClassCycle(rng, pool=DRAW_ORDER[:classes])
    for image_id in all_ids:
        image, objects = _draw_image(rng, size, class_cycle)
        _write_one(voc, sbd, image_id, image, objects, image_id in in_voc_seg, image_id in in_sbd)
    seg = voc / "ImageSets" / "Segmentation"
    _write_list(seg / "train.txt", splits.voc_train)
    _write_list(seg / "val.txt", splits.voc_val)
    _write_list(seg / "trainval.txt", sorted(splits.voc_train + splits.voc_val))
    _write_list(sbd / "train.txt", splits.sbd_train)
    _write_list(sbd / "val.txt", splits.sbd_val)
    return splits


def _assign_roles(rng: np.random.Generator, n_train: int, n_val: int) -> ToySplits:
    n_extra = max(1, n_train // 2)
    total = n_train + n_val + n_extra
    ids: set = set()
    while len(ids) < total:
        year = int(rng.integers(2007, 2012))
        ids.add(f"{year}_{int(rng.integers(0, 8000)):06d}")
    shuffled = [str(i) for i in rng.permutation(sorted(ids))]
    train = sorted(shuffled[:n_train])
    val = sorted(shuffled[n_train:n_train + n_val])
    extra = sorted(shuffled[n_train + n_val:])
    sbd_train = [t for i, t in enumerate(train) if i % 4 in (1, 2)]
    sbd_val = [t for i, t in enumerate(train) if i % 4 == 3]
    sbd_train += [v for j, v in enumerate(val) if j % 4 == 0]
    sbd_val += [v for j, v in enumerate(val) if j % 4 == 2]
    sbd_train += [e for k, e in enumerate(extra) if k % 3 != 2]
    sbd_val += [e for k, e in enumerate(extra) if k % 3 == 2]
    return ToySplits(tuple(train), tuple(val), tuple(sorted(sbd_train)), tuple(sorted(sbd_val)), tuple(extra))


# ---------------------------------------------------------------------------------------------------- masks


def _with_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """``labels`` with IGNORE_INDEX on every pixel within ``radius`` of a different label (the VOC border band)."""
    k = 2 * radius + 1
    border = ndimage.maximum_filter(labels, size=k) != ndimage.minimum_filter(labels, size=k)
    out = labels.copy()
    out[border] = IGNORE_INDEX
    return out


def _coarser(labels: np.ndarray) -> np.ndarray:
    """SBD-style mask: objects grown by one pixel into the background, no band."""
    grown = ndimage.maximum_filter(labels, size=3)
    return np.where(labels == 0, grown, labels).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- writing


def _write_one(voc: Path, sbd: Path, image_id: str, image: np.ndarray, objects: list[ToyObject],
               voc_mask: bool, sbd_mask: bool) -> None:
    h, w = image.shape[:2]
    Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
    (voc / "Annotations" / f"{image_id}.xml").write_text(_annotation_xml(image_id, h, w, objects, voc_mask))
    classes, instances = _label_maps(h, w, objects)
    if voc_mask:
        radius = max(1, round(max(h, w) / 64))
        band = _with_band(classes, radius) == IGNORE_INDEX
        write_label_png(voc / "SegmentationClass" / f"{image_id}.png", np.where(band, IGNORE_INDEX, classes))
        write_label_png(voc / "SegmentationObject" / f"{image_id}.png", np.where(band, IGNORE_INDEX, instances))
    if sbd_mask:
        Image.fromarray(image).save(sbd / "img" / f"{image_id}.jpg", quality=92)
        coarse, coarse_inst = _coarser(classes), _coarser(instances)
        _write_sbd_mats(sbd, image_id, coarse, coarse_inst, [o.cls + 1 for o in objects])


def _boundaries(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """A MATLAB cell (len(values), 1) of sparse boundary maps, one per label value."""
    cell = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        region = labels == v
        edge = region & ~ndimage.binary_erosion(region)
        cell[i, 0] = scipy.sparse.csc_matrix(edge)
    return cell


def _write_sbd_mats(sbd: Path, image_id: str, classes: np.ndarray, instances: np.ndarray,
                    instance_classes: list[int]) -> None:
    present = sorted(set(int(c) for c in np.unique(classes)) - {0})
    gt_cls = {
        "Segmentation": classes,
        "Boundaries": _boundaries(classes, list(range(1, NUM_CLASSES + 1))),
        "CategoriesPresent": np.array(present, np.uint8).reshape(-1, 1),
    }
    scipy.io.savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": gt_cls}, do_compression=True)
    n = len(instance_classes)
    gt_inst = {
        "Segmentation": instances,
        "Boundaries": _boundaries(instances, list(range(1, n + 1))),
        "Categories": np.array(instance_classes, np.uint8).reshape(-1, 1),
    }
    scipy.io.savemat(sbd / "inst" / f"{image_id}.mat", {"GTinst": gt_inst}, do_compression=True)


def _annotation_xml(image_id: str, h: int, w: int, objects: list[ToyObject], segmented: bool) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "The VOC2012 Database"
    ET.SubElement(source, "annotation").text = "PASCAL VOC2012"
    ET.SubElement(source, "image").text = "flickr"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1" if segmented else "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = VOC_CLASSES[obj.cls]
        ET.SubElement(node, "pose").text = "Unspecified"
        truncated = obj.cy - obj.ry < 1 or obj.cx - obj.rx < 1 or obj.cy + obj.ry > h - 1 or obj.cx + obj.rx > w - 1
        ET.SubElement(node, "truncated").text = "1" if truncated else "0"
        ET.SubElement(node, "difficult").text = "0"
        box = ET.SubElement(node, "bndbox")
        bounds = (("xmin", obj.cx - obj.rx, w), ("ymin", obj.cy - obj.ry, h),
                  ("xmax", obj.cx + obj.rx, w), ("ymax", obj.cy + obj.ry, h))
        for tag, value, limit in bounds:
            ET.SubElement(box, tag).text = str(int(np.clip(round(value) + 1, 1, limit)))  # VOC boxes are 1-based
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _write_list(path: Path, ids) -> None:
    path.write_text("".join(f"{i}\n" for i in ids))
