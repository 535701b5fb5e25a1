"""A prepared dataset (the ``--data DATA`` folder written by ``wsss data prepare``), opened for reading.

Example:
    >>> data = open_dataset("data/voc")
    >>> data.splits()
    ['train', 'train_aug', 'trainval', 'val']
    >>> image = data.read_image(data.ids("train")[0])          # uint8 (H, W, 3) RGB
    >>> data.label_vector(data.ids("train")[0]).shape            # float32 (C,)
    (20,)
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np

from wsss.artifacts import Manifest, read_manifest
from wsss.data.image_decode import read_rgb
from wsss.data.palette import read_label_png
from wsss.data.prepare import IMAGES_FILE, KIND, LABELS_FILE, MASKS_DIR, SPLITS_DIR, palette_from_hex
from wsss.data.voc import image_file, read_id_list
from wsss.errors import UserError


def open_dataset(path: Path) -> "PreparedData":
    """Open a prepared dataset folder.

    Raises:
        UserError: ``path`` is not a complete prepared dataset (names the folder and what was expected).
    """
    path = Path(path)
    try:
        manifest = read_manifest(path, KIND)
    except UserError as e:
        raise UserError(f"--data {e} (prepare one with `wsss data prepare voc|coco|folder`)") from None
    for key in ("classes", "palette", "voc_root" if "image_root" not in manifest.extra else "image_root"):
        if key not in manifest.extra:
            raise UserError(f"--data {path}: manifest.json lacks '{key}' (not written by `wsss data prepare`)")
    return PreparedData(path, manifest)


class PreparedData:
    """Read access to a prepared dataset: split ids, images, masks and image-level labels.

    Attributes:
        root: the prepared folder.
        classes: foreground class names (label k + 1 in masks is ``classes[k]``).
        num_classes: number of foreground classes C.
        palette: flat palette (3 * 256 ints) for label PNGs.
        manifest: the folder's manifest.
        source: what the folder was prepared from: ``voc``, ``coco`` or ``folder``.
        mask_rule: how the masks were made from annotations (COCO: crowd and overlap rules), or None.
    """

    def __init__(self, root: Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest
        self.classes: tuple = tuple(manifest.extra["classes"])
        self.num_classes = len(self.classes)
        self.palette: list[int] = palette_from_hex(manifest.extra["palette"])
        self.source: str = manifest.extra.get("source", "voc")
        self.mask_rule: Optional[dict] = manifest.extra.get("mask_rule")
        voc, sbd, images = (manifest.extra.get(k) for k in ("voc_root", "sbd_root", "image_root"))
        self.voc_root: Optional[Path] = Path(voc) if voc else None
        self.sbd_root: Optional[Path] = Path(sbd) if sbd else None
        self.image_root: Optional[Path] = Path(images) if images else None
        self._ids: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"PreparedData({str(self.root)!r}, classes={self.num_classes}, splits={self.splits()})"

    def splits(self) -> list[str]:
        """Names of the splits, sorted."""
        return sorted(p.stem for p in (self.root / SPLITS_DIR).glob("*.txt"))

    def ids(self, split: str) -> list[str]:
        """Image ids of ``split``, sorted.

        Raises:
            UserError: unknown split (names the available ones).
        """
        if split not in self._ids:
            path = self.root / SPLITS_DIR / f"{split}.txt"
            if not path.is_file():
                raise UserError(f"--split {split}: no such split in {self.root} "
                                f"(available: {', '.join(self.splits())})")
            self._ids[split] = read_id_list(path)
        return self._ids[split]

    def image_path(self, image_id: str) -> Path:
        """The image of ``image_id``: from ``images.json`` (COCO, folder); VOC ``JPEGImages`` first, SBD ``img``
        as fallback (VOC).

        Raises:
            UserError: the image is not there.
        """
        if self.image_root is not None:
            rel = self._image_files.get(image_id)
            if rel is None:
                raise UserError(f"image {image_id} is not in {self.root / IMAGES_FILE}")
            path = self.image_root / rel
            if not path.is_file():
                raise UserError(f"image {image_id}: {path} not found (moved since `wsss data prepare`?)")
            return path
        path = image_file(self.voc_root, self.sbd_root, image_id)
        if path is None:
            where = str(self.voc_root / "JPEGImages") + (f" or {self.sbd_root / 'img'}" if self.sbd_root else "")
            raise UserError(f"image {image_id}.jpg not found in {where}")
        return path

    def read_image(self, image_id: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB, Pillow's pixels (JPEGs decoded by torchvision where it gives the same ones, see
        :mod:`wsss.data.image_decode`)."""
        path = self.image_path(image_id)
        try:
            return read_rgb(path)
        except OSError as e:
            raise UserError(f"{path}: cannot read the image ({e})") from None

    def mask_path(self, image_id: str) -> Optional[Path]:
        """The mask PNG of ``image_id``: VOC ``SegmentationClass`` first, then ``DATA/masks``; or None."""
        voc = [self.voc_root / "SegmentationClass" / f"{image_id}.png"] if self.voc_root is not None else []
        for path in (*voc, self.root / MASKS_DIR / f"{image_id}.png"):
            if path.is_file():
                return path
        return None

    def has_mask(self, image_id: str) -> bool:
        return self.mask_path(image_id) is not None

    def read_mask(self, image_id: str) -> np.ndarray:
        """uint8 (H, W): 0 background, 1..C classes, 255 ignore.

        Raises:
            UserError: the id has no mask (e.g. a test image).
        """
        path = self.mask_path(image_id)
        if path is None:
            where = "VOC SegmentationClass nor in " if self.voc_root is not None else ""
            raise UserError(f"image {image_id} has no ground-truth mask (not in {where}{self.root / MASKS_DIR})")
        try:
            return read_label_png(path)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read the mask ({e})") from None

    def _read_json(self, name: str, what: str) -> dict:
        path = self.root / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read the {what} ({e})") from None

    @cached_property
    def _labels(self) -> dict[str, list[int]]:
        return self._read_json(LABELS_FILE, "image labels")

    @cached_property
    def _image_files(self) -> dict[str, str]:
        return self._read_json(IMAGES_FILE, "image index")

    def has_labels(self, image_id: str) -> bool:
        """Whether ``image_id`` has image-level labels (every id with a mask has; test ids do not)."""
        return image_id in self._labels

    def labels(self, image_id: str) -> np.ndarray:
        """int64 (K,): the 0-based foreground class indices present in the image.

        Raises:
            UserError: the id has no labels (not in a split with masks).
        """
        try:
            return np.asarray(self._labels[image_id], dtype=np.int64)
        except KeyError:
            raise UserError(f"image {image_id} has no image-level labels in {self.root / LABELS_FILE}") from None

    def label_vector(self, image_id: str) -> np.ndarray:
        """float32 (C,) multi-hot vector of the classes present."""
        vec = np.zeros(self.num_classes, np.float32)
        vec[self.labels(image_id)] = 1.0
        return vec
