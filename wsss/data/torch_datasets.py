"""Torch datasets over a prepared dataset: classification, segmentation (any named masks) and inference.

Every item is a dict. ``"image"`` is float32 (3, H, W), normalised by the transform's normalisation;
``"label"`` is the (C,) multi-hot float32 image label; masks are int64 (H, W) with 255 = ignore.

Example:
    >>> from wsss.data.prepared import open_dataset
    >>> from wsss.data.transforms import JointTransform, JointTransformConfig
    >>> from wsss.models.normalization import normalization_for
    >>> data = open_dataset("data/voc")
    >>> t = JointTransform(JointTransformConfig.psa_cls(), normalization_for("wideresnet38"))
    >>> item = ClassificationDataset(data, "train_aug", t)[0]
    >>> item["image"].shape, item["label"].shape
    (torch.Size([3, 448, 448]), torch.Size([20]))
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from wsss.data.prepared import PreparedData
from wsss.data.transforms import JointTransform
from wsss.errors import UserError

MaskReader = Callable[[str], np.ndarray]


def _require_labels(data: PreparedData, split: str, ids: list[str]) -> None:
    unlabelled = [i for i in ids if not data.has_labels(i)]
    if unlabelled:
        raise UserError(f"--split {split}: {len(unlabelled)} ids have no image-level labels "
                        f"(first: {unlabelled[0]}); only splits with masks have them")


class ClassificationDataset(Dataset):
    """Images with their image-level labels: ``{"id", "image", "label"}``.

    Args:
        data: the prepared dataset.
        split: split name; every id must have image labels (UserError otherwise, e.g. for ``test``).
        transform: joint transform; None gives the image unaugmented as float32 0..255.
    """

    def __init__(self, data: PreparedData, split: str, transform: Optional[JointTransform] = None):
        self.data, self.split = data, split
        self.ids = list(data.ids(split))
        _require_labels(data, split, self.ids)
        self.transform = transform if transform is not None else JointTransform()
        self.mask_readers: dict[str, MaskReader] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        masks = {name: np.asarray(read(image_id)) for name, read in self.mask_readers.items()}
        for name, mask in masks.items():
            if mask.shape != image.shape[:2]:
                raise UserError(f"mask {name!r} of image {image_id} is {mask.shape[1]}x{mask.shape[0]}, "
                                f"expected the image size {image.shape[1]}x{image.shape[0]}")
        image_t, masks_t = self.transform(image, masks)
        item = {"id": image_id, "image": image_t, "label": torch.from_numpy(self.data.label_vector(image_id))}
        item.update(masks_t)
        return item


class SegmentationDataset(ClassificationDataset):
    """Images, labels and named masks transformed jointly: ``{"id", "image", "label", <name>: int64 (H, W)}``.

    Args:
        data: the prepared dataset.
        split: split name.
        masks: name -> function(id) giving a uint8 (H, W) label map the size of the image; default
            ``{"mask": data.read_mask}`` (the ground truth). Pseudo labels from a ``label`` artifact go here.
        transform: joint transform.
    """

    def __init__(self, data: PreparedData, split: str, masks: Optional[Mapping[str, MaskReader]] = None,
                 transform: Optional[JointTransform] = None):
        super().__init__(data, split, transform)
        self.mask_readers = dict(masks) if masks is not None else {"mask": data.read_mask}
        reserved = {"id", "image", "label"} & set(self.mask_readers)
        if reserved:
            raise ValueError(f"mask names {sorted(reserved)} clash with the item keys id, image, label")
