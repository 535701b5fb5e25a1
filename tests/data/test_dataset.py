"""``open_dataset`` / ``PreparedData``: the read interface every stage uses."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.data import tiny_tree
from wsss.data.classes import VOC_CLASSES
from wsss.data.prepared import open_dataset
from wsss.data.palette import VOC_PALETTE
from wsss.data.prepare import prepare_voc
from wsss.errors import UserError


def test_interface_on_the_toy(toy_data):
    data = open_dataset(toy_data)
    assert data.classes == VOC_CLASSES and data.num_classes == 20 and data.palette == list(VOC_PALETTE)
    image_id = data.ids("train")[0]
    image = data.read_image(image_id)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    mask = data.read_mask(image_id)
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    labels = data.labels(image_id)
    assert labels.dtype == np.int64 and len(labels) >= 1
    np.testing.assert_array_equal(labels, np.unique(mask[(mask > 0) & (mask < 255)]).astype(np.int64) - 1)
    vec = data.label_vector(image_id)
    assert vec.dtype == np.float32 and vec.shape == (20,) and vec.sum() == len(labels) and (vec[labels] == 1).all()


def test_every_train_aug_id_has_image_mask_and_labels(toy_data):
    data = open_dataset(toy_data)
    for image_id in data.ids("train_aug"):
        assert data.image_path(image_id).is_file()
        assert data.mask_path(image_id) is not None and data.has_labels(image_id)


def test_unknown_split_names_the_available_ones(toy_data):
    with pytest.raises(UserError, match=r"--split nope: .*available: train, train_aug, trainval, val"):
        open_dataset(toy_data).ids("nope")


def test_not_a_prepared_dataset(tmp_path):
    with pytest.raises(UserError, match="--data .*no such folder"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(UserError, match="--data .*no manifest.json"):
        open_dataset(tmp_path)


def test_another_kind_of_artifact_is_refused(tmp_path):
    from wsss.artifacts import OutputDir

    OutputDir.open(tmp_path / "cams", kind="cam", stage="cam_infer", config={}).complete(0)
    with pytest.raises(UserError, match="expected a 'dataset' artifact"):
        open_dataset(tmp_path / "cams")


def test_sbd_image_is_the_fallback(tmp_path):
    voc, sbd, out = tiny_tree.write_tiny_tree(tmp_path / "raw") + (tmp_path / "data",)
    prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    data = open_dataset(out)
    assert data.image_path("s1").parent.name == "img"  # the tiny tree has SBD-only images only in SBD img
    assert data.image_path("a2").parent.name == "JPEGImages"
    (voc / "JPEGImages" / "a2.jpg").unlink()
    assert data.image_path("a2").parent.name == "img"
    shutil.rmtree(sbd / "dataset" / "img")
    with pytest.raises(UserError, match=r"image a2\.jpg not found"):
        data.read_image("a2")


def test_class_list_of_any_length(tmp_path):
    voc, sbd = tiny_tree.write_tiny_tree(tmp_path / "raw")
    prepare_voc(voc, sbd, tmp_path / "data", classes=tiny_tree.CLASSES)
    data = open_dataset(tmp_path / "data")
    assert data.classes == ("cat", "dog", "fox") and data.num_classes == 3
    np.testing.assert_array_equal(data.label_vector("s1"), [0, 0, 1])
    with pytest.raises(UserError, match="has no image-level labels"):
        data.labels("zz")
