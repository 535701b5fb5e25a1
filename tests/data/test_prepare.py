"""``prepare_voc``: split derivation, image labels, SBD conversion, VOC-mask precedence, atomicity, bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.data import tiny_tree
from wsss.artifacts import read_manifest
from wsss.data import prepare as prepare_module
from wsss.data.prepared import open_dataset
from wsss.data.palette import read_label_png, voc_palette
from wsss.data.prepare import derive_train_aug, prepare_voc
from wsss.data.voc import classes_present, read_id_list
from wsss.errors import UserError


@pytest.fixture()
def tiny(tmp_path):
    voc, sbd = tiny_tree.write_tiny_tree(tmp_path / "raw")
    return voc, sbd, tmp_path / "data"


def _split(out, name):
    return read_id_list(out / "splits" / f"{name}.txt")


def test_train_aug_rule_by_hand():
    assert derive_train_aug(["a", "b"], ["v"], ["b", "v", "x"], ["y", "a"]) == ["a", "b", "x", "y"]
    assert derive_train_aug(["a"], ["a"], [], []) == []


def test_splits_of_the_tiny_tree_are_exact(tiny):
    voc, sbd, out = tiny
    m = prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert _split(out, "train") == tiny_tree.VOC_TRAIN
    assert _split(out, "val") == tiny_tree.VOC_VAL
    assert _split(out, "trainval") == sorted(tiny_tree.VOC_TRAIN + tiny_tree.VOC_VAL)
    assert _split(out, "train_aug") == tiny_tree.TRAIN_AUG
    assert sorted(p.stem for p in (out / "masks").iterdir()) == ["s1", "s2"]
    assert m.extra["splits"]["train_aug"] == {"ids": 5, "voc_masks": 3, "sbd_masks": 2}
    assert m.num_items == 7 and m.kind == "dataset" and m.stage == "data_prepare"
    assert m.extra["voc_root"] == str(voc.resolve()) and m.extra["sbd_root"] == str((sbd / "dataset").resolve())


def test_labels_come_from_the_masks_ignoring_0_and_255(tiny):
    voc, sbd, out = tiny
    prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    labels = json.loads((out / "labels.json").read_text())
    # VOC masks: class 1 + n % 3 in the left half -> 0-based index n % 3; SBD masks: class 3 -> index 2.
    assert labels == {"a1": [0], "a2": [1], "a3": [2], "b1": [0], "b2": [1], "s1": [2], "s2": [2]}
    mask = np.array([[0, 255, 3], [7, 7, 0]], np.uint8)
    assert classes_present(mask, 20).tolist() == [2, 6]
    assert classes_present(mask, 5).tolist() == [2]


def test_voc_mask_wins_over_sbd(tiny):
    voc, sbd, out = tiny
    prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    data = open_dataset(out)
    assert data.mask_path("a2").parent == voc.resolve() / "SegmentationClass"
    np.testing.assert_array_equal(data.read_mask("a2"), tiny_tree.voc_mask(1))
    np.testing.assert_array_equal(data.read_mask("s1"), tiny_tree.sbd_mask())
    assert not (out / "masks" / "a2.png").exists()


def test_sbd_masks_become_palette_pngs_with_the_given_palette(tiny):
    voc, sbd, out = tiny
    palette = voc_palette()
    palette[9:12] = [1, 2, 3]
    prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES, palette=palette)
    from PIL import Image

    with Image.open(out / "masks" / "s1.png") as img:
        assert img.mode == "P" and img.getpalette()[9:12] == [1, 2, 3]
    assert open_dataset(out).palette[9:12] == [1, 2, 3]


def test_toy_split_counts_follow_the_generator_rule(toy_root, toy_data):
    data = open_dataset(toy_data)
    assert data.splits() == ["train", "train_aug", "trainval", "val"]
    # T = 24, V = 8, E = 12: train_aug = T + E.
    assert [len(data.ids(s)) for s in ("train", "val", "trainval", "train_aug")] == [24, 8, 32, 36]
    assert set(data.ids("train")) <= set(data.ids("train_aug"))
    assert not set(data.ids("val")) & set(data.ids("train_aug"))
    sbd = set(read_id_list(toy_root / "benchmark_RELEASE/dataset/train.txt"))
    sbd |= set(read_id_list(toy_root / "benchmark_RELEASE/dataset/val.txt"))
    assert sbd & set(data.ids("val"))  # some SBD ids are VOC val images, and were left out
    assert len(list((toy_data / "masks").iterdir())) == 12


def test_prepare_without_sbd(tiny):
    voc, _, out = tiny
    m = prepare_voc(voc, None, out, classes=tiny_tree.CLASSES)
    assert open_dataset(out).splits() == ["train", "trainval", "val"]
    assert m.extra["sbd_root"] is None and "train_aug" not in m.extra["splits"]
    assert not (out / "masks").exists()


def test_test_split_is_kept_without_labels(tiny):
    voc, sbd, out = tiny
    shutil.copy(voc / "JPEGImages" / "a1.jpg", voc / "JPEGImages" / "t1.jpg")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("t1\n")
    prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    data = open_dataset(out)
    assert data.ids("test") == ["t1"] and not data.has_labels("t1")
    with pytest.raises(UserError, match="t1 has no ground-truth mask"):
        data.read_mask("t1")


def test_rerun_is_a_no_op_and_another_config_is_refused(tiny):
    voc, sbd, out = tiny
    first = prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    again = prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert again.created_at == first.created_at
    with pytest.raises(UserError, match="--overwrite"):
        prepare_voc(voc, None, out, classes=tiny_tree.CLASSES)
    m = prepare_voc(voc, None, out, classes=tiny_tree.CLASSES, overwrite=True)
    assert "train_aug" not in m.extra["splits"]


def test_interrupted_prepare_does_not_look_complete_and_resumes(tiny, monkeypatch):
    voc, sbd, out = tiny
    real = prepare_module.read_sbd_mat
    calls = []

    def flaky(path, num_classes):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, num_classes)

    monkeypatch.setattr(prepare_module, "read_sbd_mat", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert not (out / "manifest.json").exists()
    assert [p.name for p in (out / "masks").iterdir()] == ["s1.png"]  # the whole first item, nothing half-written
    with pytest.raises(UserError, match="incomplete"):
        open_dataset(out)
    monkeypatch.setattr(prepare_module, "read_sbd_mat", real)
    m = prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert read_manifest(out, "dataset").num_items == m.num_items == 7
    np.testing.assert_array_equal(read_label_png(out / "masks" / "s2.png"), tiny_tree.sbd_mask())


def test_missing_voc_folder(tmp_path):
    with pytest.raises(UserError, match="--voc-root .*no such folder"):
        prepare_voc(tmp_path / "nowhere", None, tmp_path / "data")
    with pytest.raises(UserError, match="not a VOC 2012 folder"):
        prepare_voc(tmp_path, None, tmp_path / "data")


def test_missing_list_file(tiny):
    voc, sbd, out = tiny
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(UserError, match=r"val\.txt: list file not found"):
        prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert not out.exists()


def test_unreadable_mat(tiny):
    voc, sbd, out = tiny
    (sbd / "dataset" / "cls" / "s2.mat").write_bytes(b"this is not a mat file")
    with pytest.raises(UserError, match=r"s2\.mat: not a readable SBD GTcls \.mat file"):
        prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert not (out / "manifest.json").exists()


def test_missing_image_and_missing_mask(tiny):
    voc, sbd, out = tiny
    (voc / "SegmentationClass" / "b1.png").unlink()
    with pytest.raises(UserError, match="id b1 has no mask"):
        prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)
    assert not out.exists()  # found before anything is written
    (voc / "JPEGImages" / "a1.jpg").unlink()
    with pytest.raises(UserError, match=r"no image .*first: a1\.jpg"):
        prepare_voc(voc, sbd, out, classes=tiny_tree.CLASSES)


def test_mask_value_outside_the_class_list(tiny):
    voc, sbd, out = tiny
    with pytest.raises(UserError, match="label value 3 is neither a class"):
        prepare_voc(voc, sbd, out, classes=("cat", "dog"))
