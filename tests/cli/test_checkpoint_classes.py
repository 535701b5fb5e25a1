"""A checkpoint trained on one class list refuses a dataset with another, naming both (issue 12).

Checkpoints record the training data's class names; every stage that runs one of them on a dataset (``cam``,
``seam``, ``aff``, ``irn``, ``single``, ``seg`` infer) compares them with the ``--data`` folder's list first.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.cli.main import cli
from wsss.data.classes import VOC_CLASSES
from wsss.data.folder import prepare_folder
from wsss.engine.checkpoint import check_classes, load_checkpoint, recorded_classes, save_checkpoint
from wsss.errors import UserError
from wsss.models.registry import build_model

SWAPPED = VOC_CLASSES[:2] + (VOC_CLASSES[3], VOC_CLASSES[2]) + VOC_CLASSES[4:]  # bird and boat change places


def _folder_dataset(root, names: tuple):
    """A prepared folder dataset of 3 random 32x32 images (split ``train``) over the class list ``names``."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"im{k}.png")
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "labels.json").write_text(json.dumps({f"im{k}": [names[k % len(names)]] for k in range(3)}))
    prepare_folder(root / "images", root / "labels.json", root / "classes.txt", root / "data", workers=0)
    return root / "data"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """3 classes: another count than VOC's 20."""
    return _folder_dataset(tmp_path_factory.mktemp("shapes"), ("circle", "square", "star"))


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """VOC's 20 names with labels 3 and 4 swapped: the same count, another list."""
    return _folder_dataset(tmp_path_factory.mktemp("swapped"), SWAPPED)


@pytest.fixture(scope="module")
def cam_weights(toy_data, tmp_path_factory):
    """A classifier trained two iterations on the toy VOC data."""
    from wsss.stages import cam_train

    out = tmp_path_factory.mktemp("cam") / "run"
    cam_train.run(cam_train.CamTrainConfig(data=toy_data, split="train", val_split=None, backbone="tiny", out=out,
                                           batch_size=4, crop=48, resize_long=(40, 64), max_iters=2, workers=0,
                                           device="cpu"))
    return out / "final.pt"


VOC_LIST = "20 classes (aeroplane, bicycle, bird, boat, ...)"


def test_training_records_the_class_names(cam_weights):
    for path in cam_weights.parent.glob("*.pt"):
        assert load_checkpoint(path)["classes"] == list(VOC_CLASSES), path.name
    assert recorded_classes(cam_weights) == list(VOC_CLASSES)


def test_cam_infer_refuses_another_class_count(cam_weights, shapes, tmp_path):
    result = CliRunner().invoke(cli, ["cam", "infer", "--data", str(shapes), "--split", "train", "--weights",
                                      str(cam_weights), "--device", "cpu", "--out", str(tmp_path / "cams")])
    assert_user_error(result, f"--weights {cam_weights}: trained on {VOC_LIST}, but --data {shapes} has "
                              f"3 classes (circle, square, star); label 1 is 'aeroplane' in the checkpoint, "
                              f"'circle' in the dataset")
    assert not (tmp_path / "cams").exists()


def test_cam_infer_refuses_the_same_count_with_other_names(cam_weights, swapped, tmp_path):
    result = CliRunner().invoke(cli, ["cam", "infer", "--data", str(swapped), "--split", "train", "--weights",
                                      str(cam_weights), "--device", "cpu", "--out", str(tmp_path / "cams")])
    assert_user_error(result, f"trained on {VOC_LIST}, but --data {swapped} has 20 classes (aeroplane, bicycle, "
                              f"boat, bird, ...); label 3 is 'bird' in the checkpoint, 'boat' in the dataset")
    assert not (tmp_path / "cams").exists()


def _checkpoint(path, model: str, classes: tuple, **kwargs):
    """One of our checkpoints of a freshly built ``model`` on the tiny backbone, trained on ``classes``."""
    kwargs = {"backbone": "tiny", **kwargs}
    net = build_model(model, **kwargs)
    save_checkpoint(path, model_name=model, model_kwargs=kwargs, state_dict=net.state_dict(), config={},
                    epoch=0, iteration=1, with_rng=False, classes=classes)
    return path


# (command, network, its arguments for 20 VOC classes, extra options): every stage that loads our checkpoints
STAGES = [
    ("cam", "cam", {"num_classes": 20}, []),
    ("seam", "seam", {"num_classes": 20}, []),
    ("aff", "aff", {}, ["--cams", "CAMS"]),
    ("irn", "irn", {}, ["--cams", "CAMS"]),
    ("single", "single_stage", {"num_classes": 21}, []),
    ("seg", "deeplabv1_resnet38", {"num_classes": 21}, []),
]


@pytest.mark.parametrize("command, model, kwargs, extra", STAGES, ids=[s[0] for s in STAGES])
def test_every_infer_stage_refuses(command, model, kwargs, extra, shapes, swapped, tmp_path):
    weights = _checkpoint(tmp_path / "w.pt", model, VOC_CLASSES, **kwargs)
    for data, fragment in ((shapes, "3 classes (circle, square, star); label 1 is 'aeroplane'"),
                           (swapped, "label 3 is 'bird' in the checkpoint, 'boat' in the dataset")):
        args = [command, "infer", "--data", str(data), "--split", "train", "--weights", str(weights), "--device",
                "cpu", "--out", str(tmp_path / "out"), *[str(tmp_path) if a == "CAMS" else a for a in extra]]
        assert_user_error(CliRunner().invoke(cli, args), f"trained on {VOC_LIST}", fragment)
        assert not (tmp_path / "out").exists()


def test_message_abbreviates_long_lists_and_names_the_first_difference(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"model": "cam", "model_kwargs": {}, "state_dict": {}, "classes": list("abcdef")}, weights)
    with pytest.raises(UserError) as e:
        check_classes(weights, list("abcdefgh"), "DATA")
    assert str(e.value) == (f"--weights {weights}: trained on 6 classes (a, b, c, d, ...), but --data DATA has 8 "
                            f"classes (a, b, c, d, ...); labels from 7 on ('g', ...) are only in the dataset (use "
                            f"a checkpoint trained on this dataset's classes)")
    with pytest.raises(UserError, match=r"labels from 3 on \('c', \.\.\.\) are only in the checkpoint"):
        check_classes(weights, ["a", "b"], "DATA")
    check_classes(weights, list("abcdef"), "DATA")  # the same list passes


def test_checkpoints_without_a_record_pass(tmp_path):
    """Checkpoints written before the names were recorded, and the authors' flat files, are not checked."""
    torch.save({"model": "cam", "model_kwargs": {}, "state_dict": {}}, tmp_path / "old.pt")
    torch.save({"fc8.weight": torch.zeros(20, 4096, 1, 1)}, tmp_path / "flat.pth")
    (tmp_path / "junk.pth").write_bytes(b"not torch")
    for name in ("old.pt", "flat.pth", "junk.pth"):
        assert recorded_classes(tmp_path / name) is None
        check_classes(tmp_path / name, ["cat"], "DATA")
