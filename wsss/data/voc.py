"""Readers of the raw PASCAL VOC 2012 and SBD (``benchmark_RELEASE``) layouts, exactly as the archives unpack.

VOC (``VOCtrainval_11-May-2012.tar``, root ``VOCdevkit/VOC2012``)::

    JPEGImages/{id}.jpg  SegmentationClass/{id}.png (palette, 255 = ignore)  Annotations/{id}.xml
    ImageSets/Segmentation/{train,val,trainval}.txt   (+ test.txt once the test archive is unpacked over it)

SBD (``benchmark.tgz``, root ``benchmark_RELEASE/dataset``)::

    img/{id}.jpg  cls/{id}.mat (struct GTcls)  inst/{id}.mat (struct GTinst)  train.txt  val.txt

Every problem with these files is a :class:`~wsss.errors.UserError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from wsss.data.palette import read_label_png
from wsss.errors import UserError

VOC_SPLITS = ("train", "val", "trainval", "test")
SBD_SPLITS = ("train", "val")


def find_voc_root(path: Path) -> Path:
    """The ``VOC2012`` folder given it, ``VOCdevkit`` or the folder holding ``VOCdevkit``.

    Raises:
        UserError: none of those holds ``JPEGImages`` and ``ImageSets/Segmentation``.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--voc-root {path}: no such folder (expected VOCdevkit/VOC2012)")
    for cand in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand.resolve()
    raise UserError(f"--voc-root {path}: not a VOC 2012 folder (expected JPEGImages/ and ImageSets/Segmentation/ "
                    f"in VOCdevkit/VOC2012)")


def find_sbd_root(path: Path) -> Path:
    """The SBD ``dataset`` folder given it or ``benchmark_RELEASE`` (or the folder holding that).

    Raises:
        UserError: none of those holds ``img/``, ``cls/`` and ``train.txt``.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--sbd-root {path}: no such folder (expected benchmark_RELEASE)")
    for cand in (path, path / "dataset", path / "benchmark_RELEASE" / "dataset"):
        if (cand / "img").is_dir() and (cand / "cls").is_dir() and (cand / "train.txt").is_file():
            return cand.resolve()
    raise UserError(f"--sbd-root {path}: not an SBD folder (expected benchmark_RELEASE/dataset with img/, cls/, "
                    f"train.txt and val.txt)")


def read_id_list(path: Path) -> list[str]:
    """Image ids of a list file: the first whitespace-separated token of each non-empty line, in file order.

    Raises:
        UserError: the file is missing, empty, or lists an id twice.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: list file not found")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{path}: list file holds no ids")
    if len(set(ids)) != len(ids):
        dup = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise UserError(f"{path}: id {dup} is listed twice")
    return ids


def voc_split_lists(voc_root: Path) -> dict[str, list[str]]:
    """The VOC segmentation splits present: ``train``, ``val``, ``trainval`` (required) and ``test`` (optional)."""
    folder = Path(voc_root) / "ImageSets" / "Segmentation"
    lists = {name: read_id_list(folder / f"{name}.txt") for name in ("train", "val", "trainval")}
    if (folder / "test.txt").is_file():
        lists["test"] = read_id_list(folder / "test.txt")
    return lists


def sbd_split_lists(sbd_root: Path) -> dict[str, list[str]]:
    """SBD's own ``train`` and ``val`` lists (not VOC's split: some SBD ids are VOC val images)."""
    return {name: read_id_list(Path(sbd_root) / f"{name}.txt") for name in SBD_SPLITS}


def read_voc_mask(path: Path, num_classes: int) -> np.ndarray:
    """A VOC ``SegmentationClass`` PNG as uint8 (H, W): 0 background, 1..num_classes, 255 ignore.

    Raises:
        UserError: unreadable file, or a value that is neither a class nor 255.
    """
    try:
        mask = read_label_png(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the mask ({e})") from None
    return _check_values(mask, num_classes, path)


@dataclass(frozen=True)
class SbdAnnotation:
    """The content of one SBD ``cls/{id}.mat``: ``segmentation`` uint8 (H, W) in 0..C, ``categories`` 1-based."""

    segmentation: np.ndarray
    categories: tuple


def read_sbd_mat(path: Path, num_classes: int) -> SbdAnnotation:
    """Read an SBD ``cls/{id}.mat`` (struct ``GTcls`` with ``Segmentation`` and ``CategoriesPresent``).

    Raises:
        UserError: the file is missing or unreadable, or lacks ``GTcls.Segmentation``.
    """
    import scipy.io

    try:
        gt = scipy.io.loadmat(str(path))["GTcls"][0, 0]
        seg = np.asarray(gt["Segmentation"])
        cats = np.asarray(gt["CategoriesPresent"]).ravel() if "CategoriesPresent" in gt.dtype.names else ()
    except FileNotFoundError:
        raise UserError(f"{path}: SBD annotation not found") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, NotImplementedError) as e:
        raise UserError(f"{path}: not a readable SBD GTcls .mat file ({type(e).__name__}: {e})") from None
    if seg.ndim != 2:
        raise UserError(f"{path}: GTcls.Segmentation must be 2-D, got shape {seg.shape}")
    seg = _check_values(seg.astype(np.uint8) if seg.max(initial=0) <= 255 else seg, num_classes, path)
    return SbdAnnotation(segmentation=seg, categories=tuple(int(c) for c in cats))


def _check_values(mask: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != 255)]
    if bad.size or mask.dtype != np.uint8:
        shown = bad[0] if bad.size else mask.max()
        raise UserError(f"{path}: label value {int(shown)} is neither a class (0..{num_classes}) nor 255")
    return mask


def classes_present(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """0-based foreground class indices present in a mask (values 1..C), ignoring 0 and 255.

    Args:
        mask: uint8 (H, W) label map.

    Returns:
        int64 (K,), sorted.
    """
    values = np.unique(mask).astype(np.int64)
    return values[(values >= 1) & (values <= num_classes)] - 1


def image_file(voc_root: Path, sbd_root: Optional[Path], image_id: str) -> Optional[Path]:
    """Where the JPEG of ``image_id`` is: VOC ``JPEGImages`` first, SBD ``img`` as fallback; None if neither."""
    p = Path(voc_root) / "JPEGImages" / f"{image_id}.jpg"
    if p.is_file():
        return p
    if sbd_root is not None:
        p = Path(sbd_root) / "img" / f"{image_id}.jpg"
        if p.is_file():
            return p
    return None
