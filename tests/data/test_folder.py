"""``wsss data prepare folder``: a made-up 3-class dataset of the user's own images, labels and masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.cli.main import cli
from wsss.data import dataset_writer
from wsss.data.prepared import open_dataset
from wsss.data.torch_datasets import ClassificationDataset, SegmentationDataset
from wsss.data.folder import prepare_folder
from wsss.data.label_files import read_classes, read_labels
from wsss.data.palette import VOC_PALETTE, write_label_png
from wsss.errors import UserError

SIZES = {"a": (12, 16), "b": (10, 14), "c": (8, 8), "d": (9, 11)}  # id -> (H, W)
LABELS = {"a": ["cat", "dog"], "b": ["fox"], "c": [], "d": ["dog"]}


def _mask_a():
    m = np.zeros(SIZES["a"], np.uint8)
    m[2:6, 3:8], m[7:11, 9:15], m[6, :] = 1, 2, 255
    return m


def _mask_b():
    m = np.zeros(SIZES["b"], np.uint8)
    m[1:9, 2:12] = 3
    return m


def write_dataset(root):
    """images/ (jpg, png, a sub-folder), classes.txt, labels.csv, masks/ (grayscale and palette), splits/."""
    (root / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (h, w) in SIZES.items():
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = root / "images" / ("sub/b.png" if image_id == "b" else f"{image_id}.jpg")
        Image.fromarray(pixels).save(path)
    (root / "classes.txt").write_text("background\ncat\ndog\nfox\n")
    (root / "labels.csv").write_text("image,labels\na.jpg,cat|dog\nsub/b.png,fox\nc,\nd,dog\n")
    (root / "masks").mkdir()
    Image.fromarray(_mask_a(), mode="L").save(root / "masks" / "a.png")
    write_label_png(root / "masks" / "b.png", _mask_b())
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\nb.png\nc\nd\n")
    (root / "splits" / "val.txt").write_text("a\nb\n")
    return root


def _args(root, out, **change):
    opts = {"--images": root / "images", "--labels": root / "labels.csv", "--classes": root / "classes.txt",
            "--masks": root / "masks", "--splits": root / "splits", "--out": out, "--workers": 0}
    opts.update(change)
    return [str(a) for k, v in opts.items() if v is not None for a in (k, v)]


def _invoke(root, out, **change):
    return CliRunner().invoke(cli, ["data", "prepare", "folder", *_args(root, out, **change)])


@pytest.fixture
def raw(tmp_path):
    return write_dataset(tmp_path / "raw")


def test_round_trip(raw, tmp_path):
    result = _invoke(raw, tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-3:] == ["train: 4 ids (2 with masks)", "val: 2 ids (2 with masks)",
                                          f"prepared {tmp_path / 'd'}: 4 labelled images, 3 classes + background"]
    data = open_dataset(tmp_path / "d")
    assert data.classes == ("cat", "dog", "fox") and data.num_classes == 3 and data.source == "folder"
    assert data.palette == list(VOC_PALETTE) and data.ids("val") == ["a", "b"]
    assert data.image_path("b") == raw / "images" / "sub" / "b.png"
    for image_id, names in LABELS.items():
        assert [data.classes[k] for k in data.labels(image_id)] == names
        assert data.read_image(image_id).shape == (*SIZES[image_id], 3)
    np.testing.assert_array_equal(data.read_mask("a"), _mask_a())
    np.testing.assert_array_equal(data.read_mask("b"), _mask_b())
    assert not data.has_mask("c")
    item = SegmentationDataset(data, "val")[0]
    assert item["label"].tolist() == [1.0, 1.0, 0.0] and tuple(item["mask"].shape) == SIZES["a"]
    assert len(ClassificationDataset(data, "train")) == 4


def test_json_and_one_hot_csv_give_the_same_labels(raw, tmp_path):
    classes = read_classes(raw / "classes.txt")
    expected = read_labels(raw / "labels.csv", classes)
    assert expected == {"a.jpg": [0, 1], "sub/b.png": [2], "c": [], "d": [1]}
    (tmp_path / "l.json").write_text(json.dumps({"a.jpg": ["dog", "cat"], "sub/b.png": ["fox"], "c": [],
                                                 "d": ["dog"]}))
    (tmp_path / "l.csv").write_text("image,cat,dog,fox\na.jpg,1,1,0\nsub/b.png,0,0,1\nc,0,0,0\nd,0,1,0\n")
    assert read_labels(tmp_path / "l.json", classes) == read_labels(tmp_path / "l.csv", classes) == expected
    (tmp_path / "s.csv").write_text('id,tags\nx,"traffic light"\ny,car; traffic light\nz,car bus\n')
    assert read_labels(tmp_path / "s.csv", ("car", "bus", "traffic light")) == {"x": [2], "y": [0, 2],
                                                                                 "z": [0, 1]}


def test_without_splits_one_train_split_and_no_masks(raw, tmp_path):
    m = prepare_folder(raw / "images", raw / "labels.csv", raw / "classes.txt", tmp_path / "d", workers=0)
    assert m.extra["splits"] == {"train": {"ids": 4, "masks": 0}}
    data = open_dataset(tmp_path / "d")
    assert data.splits() == ["train"] and data.ids("train") == ["a", "b", "c", "d"] and not data.has_mask("a")


def test_idempotent_resumable_and_a_changed_labels_file_is_refused(raw, tmp_path, monkeypatch):
    calls, build = [], dataset_writer.write_label_png

    def killed_after_one(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return build(*args)

    monkeypatch.setattr(dataset_writer, "write_label_png", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(raw / "images", raw / "labels.csv", raw / "classes.txt", tmp_path / "d", masks=raw / "masks",
                       workers=0)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "d" / "masks").glob("*.png")] == ["a.png"]
    assert _invoke(raw, tmp_path / "d").exit_code == 2  # another config (with --splits): refused, not mixed
    prepare_folder(raw / "images", raw / "labels.csv", raw / "classes.txt", tmp_path / "d", masks=raw / "masks",
                   workers=0)
    assert open_dataset(tmp_path / "d").read_mask("b").max() == 3
    before = (tmp_path / "d" / "manifest.json").read_bytes()
    prepare_folder(raw / "images", raw / "labels.csv", raw / "classes.txt", tmp_path / "d", masks=raw / "masks",
                   workers=0)
    assert (tmp_path / "d" / "manifest.json").read_bytes() == before
    (raw / "labels.csv").write_text("image,labels\na,cat\nb,fox\nc,\nd,dog\n")
    with pytest.raises(UserError, match="another config or inputs"):
        prepare_folder(raw / "images", raw / "labels.csv", raw / "classes.txt", tmp_path / "d",
                       masks=raw / "masks", workers=0)


def _write(path, text):
    path.write_text(text)
    return path


def _bad_mask(raw, array, mode="L"):
    Image.fromarray(array, mode=mode).save(raw / "masks" / "a.png")


BAD = [
    (lambda raw: _write(raw / "labels.csv", "image,labels\na,cat|wolf\nb,fox\nc,\nd,dog\n"),
     {}, ["--labels", "row 2", "unknown class name 'wolf'", "classes: cat, dog, fox"]),
    (lambda raw: _write(raw / "labels.csv", "image,labels\na,cat\nb,fox\nc,\n"), {},
     ["--labels", "no labels for the image", "d.jpg"]),
    (lambda raw: _write(raw / "labels.csv", "image,labels\na,cat\nb,fox\nc,\nd,dog\ne.jpg,dog\n"), {},
     ["--labels", "'e.jpg' is not an image in --images"]),
    (lambda raw: _write(raw / "labels.csv", "image,labels\na,cat\nb,fox\nc,\nd,dog\na.jpg,dog\n"), {},
     ["--labels", "image 'a' is given twice"]),
    (lambda raw: _write(raw / "labels.csv", "image,labels\na,cat\nb,fox\nc,\nd,dog\nd,cat\n"), {},
     ["--labels", "image 'd' is labelled twice (row 6)"]),
    (lambda raw: _write(raw / "labels.csv", "image,cat,dog,fox\na,1,1,0\nb,0,0,yes\nc,0,0,0\nd,0,1,0\n"), {},
     ["row 3, column 'fox': expected 0 or 1"]),
    (lambda raw: _write(raw / "labels.csv", "image,cat,wolf,fox\na,1,1,0\n"), {},
     ["header column 'wolf' is not a class name"]),
    (lambda raw: _write(raw / "labels.txt", "a cat"), {"--labels": "labels.txt"}, ["expected a .json or .csv"]),
    (lambda raw: _write(raw / "classes.txt", "cat\ndog\ncat\n"), {}, ["--classes", "class 'cat' is listed twice"]),
    (lambda raw: _write(raw / "classes.txt", "background\n"), {}, ["--classes", "no class names"]),
    (lambda raw: _bad_mask(raw, np.zeros((5, 5), np.uint8)), {}, ["a.png", "the mask is 5x5", "16x12"]),
    (lambda raw: _bad_mask(raw, np.full(SIZES["a"], 4, np.uint8)), {},
     ["a.png", "value 4 is outside the class list (0..3, 255 ignore)"]),
    (lambda raw: _bad_mask(raw, np.zeros((*SIZES["a"], 3), np.uint8), "RGB"), {},
     ["a.png", "must be palette or grayscale"]),
    (lambda raw: _bad_mask(raw, np.zeros(SIZES["a"], np.uint8)) or (raw / "masks" / "a.png").rename(
        raw / "masks" / "zz.png"), {}, ["--masks", "'zz' is not an image in --images"]),
    (lambda raw: _write(raw / "splits" / "val.txt", "a\nq\n"), {}, ["--splits", "val.txt", "'q' is not an image"]),
    (lambda raw: Image.new("RGB", (4, 4)).save(raw / "images" / "sub" / "a.png"), {},
     ["--images", "have the same id 'a'"]),
    (lambda raw: Image.new("RGB", (4, 4)).save(raw / "images" / "e f.jpg"), {}, ["an id with whitespace"]),
    (lambda raw: None, {"--images": "nope"}, ["--images", "no such folder"]),
    (lambda raw: None, {"--splits": "labels.csv"}, ["--splits", "expected a folder of {name}.txt"]),
]


@pytest.mark.parametrize("edit, change, fragments", BAD)
def test_bad_input_is_one_clear_line(raw, tmp_path, edit, change, fragments):
    edit(raw)
    change = {k: raw / v for k, v in change.items()}
    assert_user_error(_invoke(raw, tmp_path / "d", **change), *fragments)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_help_names_every_option():
    result = CliRunner().invoke(cli, ["data", "prepare", "folder", "--help"])
    assert result.exit_code == 0
    for option in ("--images", "--labels", "--classes", "--masks", "--splits", "--out", "--workers", "--overwrite"):
        assert option in result.output
