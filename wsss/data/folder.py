"""``wsss data prepare folder``: any dataset given as images + image-level labels (+ masks for evaluation).

Input:

* ``--images DIR``: the images (``.jpg .jpeg .png .bmp .tif .tiff .webp``, sub-folders searched); an image's id
  is its file name without extension, so ids must be unique across sub-folders.
* ``--labels FILE`` and ``--classes FILE``: see :mod:`wsss.data.label_files`. Every image needs labels.
* ``--masks DIR`` (optional): ``{id}.png`` (palette or grayscale: 0 background, 1..C, 255 ignore) for the images
  that have a ground truth; the size of their image. Needed only to evaluate.
* ``--splits DIR`` (optional): ``{name}.txt``, one image id (or file name) per line; without it one split
  ``train`` holds every image.

The prepared folder has the layout of :mod:`wsss.data.prepare` plus ``images.json`` (images are not copied; the
masks are rewritten as palette PNGs in ``DATA/masks``). Resumable and idempotent like every prepare: the labels
file and the split lists are part of the folder's identity (a changed file is refused without ``--overwrite``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from wsss.artifacts import Manifest, OutputDir, read_manifest
from wsss.data.dataset_writer import base_extra, default_workers, mask_job, run_jobs, write_prepared
from wsss.data.label_files import read_classes, read_labels
from wsss.data.palette import IGNORE_INDEX, VOC_PALETTE, read_label_png
from wsss.data.prepare import KIND, MASKS_DIR
from wsss.data.voc import read_id_list
from wsss.errors import UserError
from wsss.process import LOG

STAGE = "data_prepare_folder"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def scan_files(folder: Path, suffixes: tuple, option: str) -> dict[str, Path]:
    """id (file name without extension) -> file, for the files under ``folder`` with one of ``suffixes``.

    Raises:
        UserError: no such folder, no file, two files with one id, an id with whitespace or a leading dot.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{option} {folder}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or not path.is_file() or path.name.startswith("."):
            continue
        if path.stem in found:
            raise UserError(f"{option} {folder}: {found[path.stem]} and {path} have the same id '{path.stem}'")
        if path.stem != "".join(path.stem.split()):
            raise UserError(f"{option} {path}: an id with whitespace ('{path.stem}'); rename the file")
        found[path.stem] = path
    if not found:
        raise UserError(f"{option} {folder}: no {'/'.join(suffixes)} file in it")
    return found


def build_mask(mask_path: str, image_path: str, num_classes: int) -> np.ndarray:
    """A worker's job: the user's mask, checked against the class list and the image size."""
    try:
        mask = read_label_png(Path(mask_path))
        with Image.open(image_path) as img:
            width, height = img.size
    except (OSError, ValueError) as e:
        raise UserError(f"--masks {mask_path}: cannot read it ({e})") from None
    bad = [int(v) for v in np.unique(mask) if v > num_classes and v != IGNORE_INDEX]
    if bad:
        raise UserError(f"--masks {mask_path}: value {bad[0]} is outside the class list (0..{num_classes}, "
                        f"255 ignore)")
    if mask.shape != (height, width):
        raise UserError(f"--masks {mask_path}: the mask is {mask.shape[1]}x{mask.shape[0]}, its image "
                        f"{image_path} {width}x{height}")
    return mask


def _resolve(keys: dict, images: dict[str, Path], root: Path, what: str) -> dict:
    """Re-key ``keys`` (id, file name or path under ``root``) by image id; UserError for a key with no image."""
    lookup = {}
    for image_id, path in images.items():
        for key in (image_id, path.name, path.relative_to(root).as_posix()):
            lookup[key] = image_id
    out: dict = {}
    for key, value in keys.items():
        if key not in lookup:
            raise UserError(f"{what}: '{key}' is not an image in --images {root}")
        if lookup[key] in out:
            raise UserError(f"{what}: image '{lookup[key]}' is given twice (as '{key}' too)")
        out[lookup[key]] = value
    return out


def _read_splits(splits: Optional[Path], images: dict[str, Path], root: Path) -> dict[str, list[str]]:
    if splits is None:
        return {"train": sorted(images)}
    files = sorted(Path(splits).glob("*.txt")) if Path(splits).is_dir() else []
    if not files:
        raise UserError(f"--splits {splits}: expected a folder of {{name}}.txt split lists")
    return {f.stem: sorted(_resolve({i: None for i in read_id_list(f)}, images, root, f"--splits {f}"))
            for f in files}


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def prepare_folder(images: Path, labels: Path, classes: Path, out: Optional[Path] = None, *,
                   masks: Optional[Path] = None, splits: Optional[Path] = None, workers: Optional[int] = None,
                   overwrite: bool = False) -> Manifest:
    """Prepare a folder of images + image-level labels (+ masks) into ``out``; see the module docstring.

    Returns:
        The manifest; ``extra["splits"][name]`` counts ``ids`` and ``masks``.

    Raises:
        UserError: an unknown class name, an image without labels, labels or a mask for a missing image, a mask
            with a value outside the class list or of another size than its image, a split id with no image, an
            ``out`` that holds something else.
    """
    if out is None:
        raise UserError("prepare folder: --out is required (the prepared dataset folder to write)")
    names = read_classes(classes)
    root = Path(images).resolve()
    found = scan_files(root, IMAGE_SUFFIXES, "--images")
    image_labels = _resolve(read_labels(labels, names), found, root, f"--labels {labels}")
    unlabelled = sorted(set(found) - set(image_labels))
    if unlabelled:
        raise UserError(f"--labels {labels}: no labels for the image {found[unlabelled[0]]}"
                        + (f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""))
    split_ids = _read_splits(splits, found, root)
    mask_files = _resolve(scan_files(masks, (".png",), "--masks"), found, root, f"--masks {masks}") if masks else {}
    config = {"images": str(root), "labels": str(Path(labels).resolve()), "classes": list(names),
              "masks": str(Path(masks).resolve()) if masks else None,
              "splits": str(Path(splits).resolve()) if splits else None}
    inputs = {"labels_sha256": _digest(labels),
              "splits_sha256": {f.stem: _digest(f) for f in sorted(Path(splits).glob("*.txt"))} if splits else None}
    out_dir = OutputDir.open(out, kind=KIND, stage=STAGE, config=config, inputs=inputs, overwrite=overwrite)
    if out_dir.state == "done":
        LOG.info("%s: already prepared from the same inputs; nothing to do", out)
        return read_manifest(out, KIND)
    if mask_files:
        _write_masks(out_dir, mask_files, found, image_labels, len(names), default_workers() if workers is None
                     else workers)
    extra = base_extra("folder", names, VOC_PALETTE, root, "labels_file")
    extra["splits"] = {name: {"ids": len(ids), "masks": sum(i in mask_files for i in ids)}
                       for name, ids in split_ids.items()}
    files = {i: p.relative_to(root).as_posix() for i, p in found.items()}
    return write_prepared(out_dir, split_ids, image_labels, files, extra)


def _write_masks(out_dir: OutputDir, mask_files: dict, images: dict, labels: dict, num_classes: int,
                 workers: int) -> None:
    """Check and rewrite the user's masks as palette PNGs; warn about masks showing classes the labels lack."""
    (out_dir.folder / MASKS_DIR).mkdir(exist_ok=True)
    palette, ids = bytes(VOC_PALETTE), sorted(mask_files)
    jobs = [(out_dir, i, num_classes, palette, True, build_mask, str(mask_files[i]), str(images[i]), num_classes)
            for i in ids]
    disagree = [i for i, present in zip(ids, run_jobs(mask_job, jobs, workers)) if not set(present) <= set(labels[i])]
    if disagree:
        LOG.warning("%d masks show classes that their image labels lack (first: %s); the labels file is what "
                    "training uses", len(disagree), disagree[0])
