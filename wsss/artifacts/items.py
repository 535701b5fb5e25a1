"""The item format of each artifact kind, declared once: file suffix, writer, reader with its validation.

=========  ==========  ==========================================================================================
kind       file        content
=========  ==========  ==========================================================================================
``cam``    ``{id}.npz``  ``cams`` float32 (K, H, W) in [0, 1] at image size; ``classes`` int64 (K,) 0-based classes;
                         optional extra arrays that readers which do not ask for them ignore (IRN's stride-4 CAM
                         ``cams_stride4``, float32 (K, ceil(H / 4), ceil(W / 4)))
``label``  ``{id}.png``  palette PNG, 0 = background, 1..C = classes, 255 = ignore
=========  ==========  ==========================================================================================

And the one rule for a folder that a stage reads for a split (:func:`split_items`): every id of the split has an
item (or, where allowed, the missing ones are listed); items of ids outside the split are an error naming them,
unless the folder's manifest says it was made for another split (e.g. ``train_aug`` CAMs serving ``train``).

Example:
    >>> fmt = FORMATS["cam"]
    >>> fmt.write(path, cams, classes)
    >>> cams, classes = fmt.read(path, image_size=(375, 500), num_classes=20)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from wsss.artifacts.manifest import MANIFEST, PARTIAL, Manifest, read_manifest
from wsss.errors import UserError
from wsss.process import LOG

LISTED = 5  # ids named in an error message; the rest are counted


def listed(ids: list) -> str:
    """The first few ids, and how many more there are."""
    shown = ", ".join(ids[:LISTED])
    return shown + (f" (and {len(ids) - LISTED} more)" if len(ids) > LISTED else "")


CAM_KEYS = ("cams", "classes")


def write_cam(path: Path, cams: np.ndarray, classes: np.ndarray, extras: Optional[Mapping] = None) -> None:
    """One ``cam`` item: ``cams`` float32 (K, H, W), ``classes`` int64 (K,), and optional ``extras`` (name ->
    array with K rows, e.g. ``cams_stride4``)."""
    extras = dict(extras or {})
    clash = sorted(set(extras) & set(CAM_KEYS))
    if clash:
        raise ValueError(f"extra CAM arrays may not be named {clash}")
    with open(path, "wb") as f:
        np.savez(f, cams=cams, classes=np.asarray(classes).astype(np.int64), **extras)


def read_cam(path: Path, image_size: Optional[tuple] = None, num_classes: Optional[int] = None,
             extras: bool = False) -> tuple:
    """One ``cam`` item, checked: ``cams`` float32 (K, H, W), ``classes`` int64 (K,).

    Args:
        path: the ``.npz`` file.
        image_size: (H, W) the CAMs must have, when given.
        num_classes: when given, the classes must be distinct 0-based indices below it and the CAMs finite.
        extras: also return the item's extra arrays, name -> array (each with K rows).

    Returns:
        ``(cams, classes)``, or ``(cams, classes, extras)`` with ``extras=True``.

    Raises:
        UserError: unreadable file, wrong keys or shapes, another size, classes out of range, NaN values.
    """
    try:
        with np.load(path) as npz:
            cams, classes = npz["cams"], npz["classes"]
            more = {k: npz[k] for k in npz.files if k not in CAM_KEYS} if extras else {}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UserError(f"{path}: not a CAM file with 'cams' (K, H, W) and 'classes' (K,) ({e})") from None
    if cams.ndim != 3 or classes.shape != cams.shape[:1] or not np.issubdtype(classes.dtype, np.integer):
        raise UserError(f"{path}: expected 'cams' (K, H, W) and integer 'classes' (K,), got shapes "
                        f"{cams.shape} and {classes.shape}")
    if any(v.ndim < 1 or len(v) != len(classes) for v in more.values()):
        raise UserError(f"{path}: extra arrays {sorted(more)} must have one row per class ({len(classes)})")
    if image_size is not None and cams.shape[1:] != tuple(image_size):
        raise UserError(f"{path}: CAMs are {cams.shape[2]}x{cams.shape[1]} but the image is "
                        f"{image_size[1]}x{image_size[0]}")
    if num_classes is not None:
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes
                             or len(set(classes.tolist())) < len(classes)):
            raise UserError(f"{path}: classes {classes.tolist()} are not distinct 0-based indices of the dataset's "
                            f"{num_classes} classes")
        if not np.isfinite(cams).all() or not all(np.isfinite(v).all() for v in more.values()):
            raise UserError(f"{path}: CAMs contain NaN or infinite values")
        cams, classes = cams.astype(np.float32, copy=False), classes.astype(np.int64)
    return (cams, classes, more) if extras else (cams, classes)


def write_label(path: Path, labels: np.ndarray, palette=None) -> None:
    """One ``label`` item: (H, W) uint8 as a palette PNG (the VOC palette unless ``palette`` is given)."""
    from wsss.data.palette import write_label_png

    write_label_png(path, labels, palette)


def read_label(path: Path, what: str = "label map") -> np.ndarray:
    """One ``label`` item (palette or grayscale PNG) as (H, W) uint8; an unreadable file is a UserError."""
    from wsss.data.palette import read_label_png

    try:
        return read_label_png(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the {what} as a label PNG ({e})") from None


@dataclasses.dataclass(frozen=True)
class ItemFormat:
    """How one artifact kind stores an item: ``{id}{suffix}``, written by ``write``, read by ``read``."""

    kind: str
    suffix: str
    noun: str  # what one item is called in messages
    write: Callable
    read: Callable

    def path(self, folder: Path, item_id: str) -> Path:
        return Path(folder) / f"{item_id}{self.suffix}"

    def present(self, folder: Path) -> set:
        """Ids of the items in ``folder`` (temporary files of a running writer excluded)."""
        return {p.stem for p in Path(folder).iterdir() if p.suffix == self.suffix and not p.name.startswith(".")}


FORMATS = {
    "cam": ItemFormat("cam", ".npz", "CAM file", write_cam, read_cam),
    "label": ItemFormat("label", ".png", "label PNG", write_label, read_label),
}


def open_items(folder: Path, kind: str, option: str, require_manifest: bool = True) -> Optional[Manifest]:
    """Validate a folder a stage reads: a complete artifact of ``kind`` (or, when not required, a plain folder).

    Returns its manifest, or None for a plain folder of items (logged).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{option} {folder}: no such folder")
    if require_manifest or (folder / MANIFEST).is_file() or (folder / PARTIAL).is_file():
        try:
            return read_manifest(folder, kind=kind)
        except UserError as e:
            raise UserError(f"{option} {e}") from None
    LOG.info("%s %s: no %s, reading it as a plain folder of %s files (e.g. made by another tool)", option, folder,
             MANIFEST, FORMATS[kind].suffix)
    return None


def split_items(folder: Path, kind: str, split: str, split_ids: list, option: str,
                manifest: Optional[Manifest] = None, allow_missing: Optional[bool] = None) -> tuple[list, list, int]:
    """Pair the ids of a split with the items of a folder (the one rule, see the module docstring).

    Returns:
        (ids that have an item, ids that have none (only with ``allow_missing``), number of items skipped
        because they belong to the other split the folder was made for). ``allow_missing=False`` (rather than
        None) means the caller offers ``--allow-missing``, and the error says so.

    Raises:
        UserError: items outside the split of a folder made for this split (named), missing items without
            ``allow_missing``, or no item at all.
    """
    fmt = FORMATS[kind]
    if not split_ids:
        raise UserError(f"--split {split}: the split has no ids; nothing to do")
    present = fmt.present(folder)
    extra = sorted(present - set(split_ids))
    other_split = manifest is not None and manifest.split not in (None, split)
    if extra and not other_split:
        raise UserError(f"{option} {folder}: {len(extra)} {fmt.noun}s are not ids of split '{split}' (first: "
                        f"{listed(extra)}); use the split the folder was made for"
                        + (f" ('{manifest.split}')" if manifest is not None and manifest.split else ""))
    missing = [i for i in split_ids if i not in present]
    if len(missing) == len(split_ids):
        raise UserError(f"{option} {folder}: none of the {len(split_ids)} ids of split '{split}' has a {fmt.noun} "
                        f"(first expected: {fmt.path(folder, split_ids[0]).name}); nothing to do")
    if missing and not allow_missing:
        raise UserError(f"{option} {folder}: no {fmt.noun} for {len(missing)} of {len(split_ids)} ids of split "
                        f"'{split}': {listed(missing)}"
                        + (" (use --allow-missing to score the others)" if allow_missing is False else ""))
    if missing:
        LOG.warning("%s: %d of %d ids have no %s and are left out: %s", option, len(missing), len(split_ids),
                    fmt.noun, listed(missing))
    if extra:
        LOG.info("%s %s: using %d of its %d '%s' items for split '%s'", option, folder, len(present) - len(extra),
                 len(present), manifest.split, split)
    return [i for i in split_ids if i in present], missing, len(extra)


def check_covers(folder: Path, kind: str, split: str, split_ids: list, option: str) -> Manifest:
    """A complete ``kind`` artifact with an item for every id of the split; returns its manifest."""
    manifest = open_items(folder, kind, option)
    split_items(folder, kind, split, split_ids, option, manifest)
    return manifest
