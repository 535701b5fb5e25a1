"""``wsss data prepare voc``: split lists, image-level labels and SBD masks as PNG, in one prepared folder.

The prepared folder (the ``--data DATA`` every stage takes) holds::

    DATA/
        manifest.json            kind "dataset", stage "data_prepare"; config: voc_root, sbd_root (absolute),
                                 classes, palette; extra: classes, palette, voc_root, sbd_root, splits (counts)
        splits/{name}.txt        one id per line, sorted: train, val, trainval, train_aug (with SBD), test (if
                                 VOC has ImageSets/Segmentation/test.txt)
        labels.json              {id: [0-based foreground class indices]} for every id of every split with masks
        masks/{id}.png           SBD masks (GTcls.Segmentation) as palette PNGs, for train_aug ids that have no
                                 VOC SegmentationClass mask

Images are not copied: they are read from VOC ``JPEGImages`` (SBD ``img`` as fallback), and masks from VOC
``SegmentationClass`` first, then ``DATA/masks`` (VOC's own mask wins wherever both exist).
``train_aug`` = VOC train + SBD train + SBD val - VOC val (10582 ids on the real data). Image labels are the
classes present in each id's mask, ignoring 0 (background) and 255 (ignore).

The folder is written through :class:`wsss.artifacts.OutputDir`: ``manifest.json`` comes last, so a killed
prepare never looks complete, and a rerun resumes (converted masks already there are kept).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from wsss.artifacts import Manifest, OutputDir, read_manifest, write_json_atomic
from wsss.data.classes import VOC_CLASSES
from wsss.data.palette import VOC_PALETTE, read_label_png, write_label_png
from wsss.data.voc import (classes_present, find_sbd_root, find_voc_root, image_file, read_sbd_mat, read_voc_mask,
                           sbd_split_lists, voc_split_lists)
from wsss.errors import UserError
from wsss.process import LOG

KIND, STAGE = "dataset", "data_prepare"
SPLITS_DIR, MASKS_DIR, LABELS_FILE = "splits", "masks", "labels.json"
# Folders prepared from COCO or from a user's folder also hold {id: image path} (see wsss.data.dataset_writer).
IMAGES_FILE = "images.json"
# The sizes of the real VOC 2012 + SBD splits; a mismatch on what looks like the real data is logged.
REAL_COUNTS = {"train": 1464, "val": 1449, "trainval": 2913, "train_aug": 10582, "test": 1456}


def palette_to_hex(palette: Sequence[int]) -> str:
    """A flat palette (3 * n ints) as one hex string, as the manifest stores it."""
    return bytes(int(v) for v in palette).hex()


def palette_from_hex(text: str) -> list[int]:
    """Inverse of :func:`palette_to_hex`."""
    return list(bytes.fromhex(text))


def derive_train_aug(voc_train: Sequence[str], voc_val: Sequence[str], sbd_train: Sequence[str],
                     sbd_val: Sequence[str]) -> list[str]:
    """``train_aug`` = VOC train + SBD train + SBD val - VOC val, sorted."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def prepare_voc(voc_root: Path, sbd_root: Optional[Path] = None, out: Optional[Path] = None, *,
                overwrite: bool = False, classes: Sequence[str] = VOC_CLASSES,
                palette: Sequence[int] = VOC_PALETTE) -> Manifest:
    """Prepare VOC 2012 (+ SBD) into ``out``; see the module docstring for the layout.

    Args:
        voc_root: ``VOCdevkit/VOC2012`` (or ``VOCdevkit``, or the folder holding it).
        sbd_root: ``benchmark_RELEASE`` (or its ``dataset`` folder); None: no ``train_aug``.
        out: the prepared folder to write (required).
        overwrite: replace whatever ``out`` holds.
        classes: foreground class names, in label order 1..C.
        palette: flat palette (3 * 256 ints) for the mask PNGs.

    Returns:
        The manifest of the prepared folder (``extra["splits"]`` has per-split counts).

    Raises:
        UserError: missing folders or list files, an id without image or mask, an unreadable mask or .mat, or an
            ``out`` that holds something else.
    """
    if out is None:
        raise UserError("prepare voc: --out is required (the prepared dataset folder to write)")
    voc = find_voc_root(voc_root)
    sbd = find_sbd_root(sbd_root) if sbd_root is not None else None
    num_classes = len(classes)
    splits = _derive_splits(voc, sbd)
    mask_source = _mask_sources(voc, sbd, splits)
    config = {"voc_root": str(voc), "sbd_root": str(sbd) if sbd else None, "classes": list(classes),
              "palette": palette_to_hex(palette)}
    out_dir = OutputDir.open(out, kind=KIND, stage=STAGE, config=config, overwrite=overwrite)
    if out_dir.state == "done":
        LOG.info("%s: already prepared from the same inputs; nothing to do", out)
        return read_manifest(out, KIND)
    labels = _convert_and_label(out_dir, voc, sbd, mask_source, num_classes, palette)
    (out_dir.folder / SPLITS_DIR).mkdir(exist_ok=True)
    for name, ids in splits.items():
        text = "".join(f"{i}\n" for i in ids)
        out_dir.write_item(f"{SPLITS_DIR}/{name}", ".txt", lambda path, text=text: path.write_text(text))
    write_json_atomic(out_dir.folder / LABELS_FILE, {i: labels[i] for i in sorted(labels)})
    counts = {name: {"ids": len(ids), "voc_masks": sum(mask_source.get(i) == "voc" for i in ids),
                     "sbd_masks": sum(mask_source.get(i) == "sbd" for i in ids)} for name, ids in splits.items()}
    _check_real_counts(counts, sbd is not None)
    extra = {"classes": list(classes), "palette": palette_to_hex(palette), "voc_root": str(voc),
             "sbd_root": str(sbd) if sbd else None, "splits": counts, "mask_precedence": "voc_then_sbd",
             "label_source": "masks"}
    return out_dir.complete(num_items=len(labels), split=None, extra=extra)


def _derive_splits(voc: Path, sbd: Optional[Path]) -> dict[str, list[str]]:
    lists = voc_split_lists(voc)
    splits = {name: sorted(ids) for name, ids in lists.items()}
    if sbd is not None:
        sbd_lists = sbd_split_lists(sbd)
        splits["train_aug"] = derive_train_aug(lists["train"], lists["val"], sbd_lists["train"], sbd_lists["val"])
    for name, ids in splits.items():
        missing = [i for i in ids if image_file(voc, sbd, i) is None]
        if missing:
            where = f"{voc / 'JPEGImages'}" + (f" or {sbd / 'img'}" if sbd else "")
            raise UserError(f"split {name}: {len(missing)} ids have no image in {where} (first: {missing[0]}.jpg)")
    return splits


def _mask_sources(voc: Path, sbd: Optional[Path], splits: dict[str, list[str]]) -> dict[str, str]:
    """id -> "voc" or "sbd" for every id of every split except test; UserError for an id without a mask."""
    source: dict[str, str] = {}
    for name, ids in splits.items():
        if name == "test":
            continue
        for i in ids:
            if i in source:
                continue
            if (voc / "SegmentationClass" / f"{i}.png").is_file():
                source[i] = "voc"
            elif sbd is not None and name == "train_aug" and (sbd / "cls" / f"{i}.mat").is_file():
                source[i] = "sbd"
            else:
                where = voc / "SegmentationClass" / f"{i}.png"
                extra = f" or {sbd / 'cls' / (i + '.mat')}" if sbd is not None and name == "train_aug" else ""
                raise UserError(f"split {name}: id {i} has no mask ({where}{extra} not found)")
    return source


def _convert_and_label(out_dir: OutputDir, voc: Path, sbd: Optional[Path], mask_source: dict[str, str],
                       num_classes: int, palette: Sequence[int]) -> dict[str, list[int]]:
    """Convert the SBD masks needed (kept if already there: resume) and derive every id's image labels."""
    masks = out_dir.folder / MASKS_DIR
    labels: dict[str, list[int]] = {}
    if any(s == "sbd" for s in mask_source.values()):
        masks.mkdir(exist_ok=True)
    for n, (i, src) in enumerate(sorted(mask_source.items())):
        if src == "voc":
            mask = read_voc_mask(voc / "SegmentationClass" / f"{i}.png", num_classes)
        elif (masks / f"{i}.png").is_file():
            mask = read_label_png(masks / f"{i}.png")
        else:
            mask = read_sbd_mat(sbd / "cls" / f"{i}.mat", num_classes).segmentation
            out_dir.write_item(f"{MASKS_DIR}/{i}", ".png", lambda path, m=mask: write_label_png(path, m, palette))
        labels[i] = [int(c) for c in classes_present(mask, num_classes)]
        if (n + 1) % 2000 == 0:
            LOG.info("prepare: %d / %d masks read", n + 1, len(mask_source))
    return labels


def _check_real_counts(counts: dict, with_sbd: bool) -> None:
    """On what looks like the real VOC 2012 (1464 train, 1449 val), every split must have its published size."""
    if counts["train"]["ids"] != REAL_COUNTS["train"] or counts["val"]["ids"] != REAL_COUNTS["val"]:
        return
    for name, expected in REAL_COUNTS.items():
        if name in counts and counts[name]["ids"] != expected:
            LOG.warning("split %s has %d ids; the real VOC 2012%s has %d", name, counts[name]["ids"],
                        " + SBD" if with_sbd else "", expected)
