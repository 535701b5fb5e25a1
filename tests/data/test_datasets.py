"""Torch datasets over the prepared toy data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsss.data.prepared import open_dataset
from wsss.data.torch_datasets import ClassificationDataset, SegmentationDataset
from wsss.data.transforms import JointTransform, JointTransformConfig
from wsss.models.normalization import normalization_for
from wsss.errors import UserError


@pytest.fixture(scope="module")
def data(toy_data):
    return open_dataset(toy_data)


def _transform(crop=48):
    config = JointTransformConfig(long_side_range=(40, 80), flip=True, jitter=(0.3, 0.3, 0.3, 0.1), crop=crop)
    return JointTransform(config, normalization_for("wideresnet38"))


def test_classification_items_batch(data):
    ds = ClassificationDataset(data, "train_aug", _transform())
    assert len(ds) == 36
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False, num_workers=0)))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 20) and batch["label"].dtype == torch.float32
    assert batch["id"] == data.ids("train_aug")[:4]
    torch.testing.assert_close(batch["label"][0], torch.from_numpy(data.label_vector(batch["id"][0])))


def test_segmentation_default_mask_is_the_ground_truth(data):
    ds = SegmentationDataset(data, "train", transform=None)
    item = ds[0]
    gt = data.read_mask(item["id"])
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == gt.shape
    np.testing.assert_array_equal(item["mask"].numpy(), gt)
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), data.read_image(item["id"]))


def test_segmentation_named_masks_move_together(data):
    def inverted(image_id):
        gt = data.read_mask(image_id)
        return np.where(gt == 255, 255, 20 - np.minimum(gt, 20)).astype(np.uint8)

    ds = SegmentationDataset(data, "train", {"la": data.read_mask, "ha": inverted}, _transform())
    torch.manual_seed(0)
    for index in range(5):
        item = ds[index]
        la, ha = item["la"], item["ha"]
        assert la.shape == ha.shape == (48, 48)
        assert torch.equal(la == 255, ha == 255)
        assert torch.equal(ha[la != 255], 20 - la[la != 255])


def test_mask_of_the_wrong_size_is_a_user_error(data):
    ds = SegmentationDataset(data, "train", {"crf": lambda i: np.zeros((5, 5), np.uint8)})
    with pytest.raises(UserError, match="mask 'crf' of image .* is 5x5, expected the image size"):
        ds[0]


def test_reserved_mask_names(data):
    with pytest.raises(ValueError, match="clash"):
        SegmentationDataset(data, "train", {"label": data.read_mask})


def test_test_split_has_no_labels(tmp_path):
    import shutil

    from tests.data import tiny_tree
    from wsss.data.prepare import prepare_voc

    voc, sbd = tiny_tree.write_tiny_tree(tmp_path / "raw")
    shutil.copy(voc / "JPEGImages" / "a1.jpg", voc / "JPEGImages" / "t1.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("t1\n")
    prepare_voc(voc, sbd, tmp_path / "data", classes=tiny_tree.CLASSES)
    tiny = open_dataset(tmp_path / "data")
    with pytest.raises(UserError, match="--split test: 1 ids have no image-level labels"):
        ClassificationDataset(tiny, "test")
    assert not tiny.has_labels("t1") and tiny.ids("test") == ["t1"]


def test_unknown_split(data):
    with pytest.raises(UserError, match="no such split"):
        ClassificationDataset(data, "test")
