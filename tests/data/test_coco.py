"""``wsss data prepare coco`` on the real COCO 2014 layout: a hand-made tree with hand-worked masks, and the toy."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.cli.main import cli
from wsss.data import coco
from wsss.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from wsss.data.coco import annotation_mask, prepare_coco, rasterise
from wsss.data.prepared import open_dataset
from wsss.data.palette import VOC_PALETTE
from wsss.data.toy_coco import uncompressed_rle, write_toy_coco
from wsss.errors import UserError

# pycocotools' decode under NumPy 2 warns about its own __array__; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rect(h, w, rows, cols):
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def _poly(x0, y0, x1, y1):
    """A rectangle polygon: pycocotools fills columns x0..x1-1 and rows y0..y1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _compressed(mask):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": list(mask.shape)}


# image id -> (height, width, [(category id, iscrowd, segmentation)]), per split, in JSON order
TRAIN = {
    34: (6, 8, [(13, 0, _compressed(_rect(6, 8, slice(2, 5), slice(0, 3))))]),        # stop sign: id 13 -> 12
    9: (8, 10, [(1, 0, _poly(1, 1, 6, 5)),                                             # person rows 1-4, cols 1-5
                (90, 0, uncompressed_rle(_rect(8, 10, slice(3, 7), slice(4, 9)))),     # toothbrush, on top
                (3, 1, uncompressed_rle(_rect(8, 10, slice(0, 3), slice(4, 10))))]),  # car crowd
    25: (6, 6, [(1, 1, uncompressed_rle(_rect(6, 6, slice(0, 6), slice(0, 3))))]),     # only a crowd
    30: (6, 6, []),                                                                    # no annotation
}
VAL = {
    42: (5, 5, [(89, 0, _poly(0, 0, 5, 2))]),                                          # hair drier -> 79
    73: (6, 6, [(2, 0, _poly(1, 1, 3, 3)), (4, 0, _poly(0, 0, 4, 4))]),                # bicycle hidden by motorcycle
}


def expected_train_9(crowd):
    m = np.zeros((8, 10), np.uint8)
    if crowd == "ignore":
        m[0:3, 4:10] = 255
    m[1:5, 1:6] = 1
    m[3:7, 4:9] = 80
    return m


def write_tree(root, train=TRAIN, val=VAL, categories=None):
    categories = categories or [{"supercategory": "x", "id": c, "name": n}
                                for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]
    (root / "annotations").mkdir(parents=True)
    for split, images in (("train2014", train), ("val2014", val)):
        (root / split).mkdir()
        d = {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": categories}
        for image_id, (h, w, anns) in images.items():
            name = f"COCO_{split}_{image_id:012d}.jpg"
            Image.new("RGB", (w, h), (90, 120, 150)).save(root / split / name)
            d["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
            for cat, crowd, seg in anns:
                d["annotations"].append({"id": len(d["annotations"]) + 1, "image_id": image_id, "category_id": cat,
                                         "iscrowd": crowd, "segmentation": seg, "area": 0.0, "bbox": [0, 0, 0, 0]})
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(d))
    return root


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "coco")


def _invoke(*args):
    return CliRunner().invoke(cli, ["data", "prepare", "coco", *map(str, args)])


def test_hand_worked_masks_labels_and_lists(tree, tmp_path):
    m = prepare_coco(tree, tmp_path / "d", workers=0)
    data = open_dataset(tmp_path / "d")
    assert data.classes == COCO_CLASSES and data.num_classes == 80 and data.source == "coco"
    assert data.palette == list(VOC_PALETTE) and m.extra["category_ids"] == list(COCO_CATEGORY_IDS)
    assert data.ids("train") == ["000000000009", "000000000034"] and data.ids("val") == ["000000000042",
                                                                                        "000000000073"]
    np.testing.assert_array_equal(data.read_mask("000000000009"), expected_train_9("background"))
    np.testing.assert_array_equal(data.labels("000000000009"), [0, 79])  # car is only a crowd: not a label
    np.testing.assert_array_equal(data.read_mask("000000000034"), 12 * _rect(6, 8, slice(2, 5), slice(0, 3)))
    np.testing.assert_array_equal(data.labels("000000000034"), [11])
    np.testing.assert_array_equal(data.labels("000000000042"), [78])
    np.testing.assert_array_equal(data.labels("000000000073"), [3])  # bicycle wholly covered by the motorcycle
    assert data.image_path("000000000042") == tree / "val2014" / "COCO_val2014_000000000042.jpg"
    assert data.read_image("000000000009").shape == (8, 10, 3)
    assert m.extra["splits"]["train"] == {"images": 4, "ids": 2, "no_annotations": 1, "no_objects": 1}
    assert m.extra["splits"]["val"] == {"images": 2, "ids": 2, "no_annotations": 0, "no_objects": 0}
    assert not data.has_labels("000000000025") and not (tmp_path / "d" / "masks" / "000000000025.png").exists()
    assert data.mask_rule == {"annotations": "non-crowd, pycocotools annToMask", "overlap": "later_wins",
                              "crowd": "background", "labels": "classes present in the mask"}


def test_crowd_ignore_rule_and_no_silent_mixing(tree, tmp_path):
    prepare_coco(tree, tmp_path / "d", crowd="ignore", workers=0)
    data = open_dataset(tmp_path / "d")
    np.testing.assert_array_equal(data.read_mask("000000000009"), expected_train_9("ignore"))
    assert data.mask_rule["crowd"] == "ignore" and data.ids("train") == ["000000000009", "000000000034"]
    with pytest.raises(UserError, match="another config or inputs; refusing"):
        prepare_coco(tree, tmp_path / "d", crowd="background", workers=0)


def test_rasterise_agrees_with_pycocotools_ann_to_mask(tmp_path):
    from pycocotools.coco import COCO

    toy = write_toy_coco(tmp_path / "raw", n_train=10, n_val=3, size=40, seed=5)
    prepare_coco(tmp_path / "raw", tmp_path / "d", workers=0)
    data = open_dataset(tmp_path / "d")
    api = COCO(str(tmp_path / "raw" / "annotations" / "instances_train2014.json"))
    label_of = {c: k + 1 for k, c in enumerate(COCO_CATEGORY_IDS)}
    assert tuple(data.ids("train")) == toy.kept["train"] and len(toy.kept["train"]) == 8
    for image_id in data.ids("train"):
        info = api.imgs[int(image_id)]
        expected = np.zeros((info["height"], info["width"]), np.uint8)
        for ann in api.imgToAnns[int(image_id)]:
            if not ann["iscrowd"]:
                expected[api.annToMask(ann) == 1] = label_of[ann["category_id"]]
        np.testing.assert_array_equal(data.read_mask(image_id), expected)
        assert data.read_image(image_id).shape[:2] == expected.shape


def test_annotation_mask_reads_polygons_and_both_rles():
    square = _rect(4, 5, slice(1, 3), slice(2, 4))
    for segmentation in (_poly(2, 1, 4, 3), uncompressed_rle(square), _compressed(square)):
        np.testing.assert_array_equal(annotation_mask(segmentation, 4, 5), square)
    assert not annotation_mask([], 4, 5).any()
    with pytest.raises(ValueError, match="RLE of size"):
        annotation_mask(uncompressed_rle(square), 5, 4)
    with pytest.raises(ValueError, match="crowd"):
        rasterise([], 4, 5, crowd="nope")


def test_resume_after_a_kill_and_idempotent_rerun(tree, tmp_path, monkeypatch):
    prepare_coco(tree, tmp_path / "fresh", workers=0)
    calls, build = [], coco.build_mask

    def killed_after_one(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return build(*args)

    monkeypatch.setattr(coco, "build_mask", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare_coco(tree, tmp_path / "d", workers=0)
    monkeypatch.undo()
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "d" / "masks").glob("*.png")}
    assert len(written) == 1 and not (tmp_path / "d" / "manifest.json").exists()
    with pytest.raises(UserError, match="incomplete artifact"):
        open_dataset(tmp_path / "d")
    prepare_coco(tree, tmp_path / "d", workers=0)
    for name, mtime in written.items():
        assert (tmp_path / "d" / "masks" / name).stat().st_mtime_ns == mtime  # kept, not rewritten
    for rel in ("labels.json", "images.json", "splits/train.txt", "splits/val.txt", *(
            f"masks/{p.name}" for p in (tmp_path / "fresh" / "masks").iterdir())):
        assert (tmp_path / "d" / rel).read_bytes() == (tmp_path / "fresh" / rel).read_bytes(), rel
    monkeypatch.setattr(coco, "read_instances", lambda path: pytest.fail("a finished folder must not be redone"))
    before = (tmp_path / "d" / "manifest.json").read_bytes()
    assert prepare_coco(tree, tmp_path / "d", workers=0).extra["splits"]["train"]["ids"] == 2
    assert (tmp_path / "d" / "manifest.json").read_bytes() == before


def test_two_workers_write_the_same_folder(tmp_path):
    write_toy_coco(tmp_path / "raw", n_train=6, n_val=3, size=32, seed=1)
    prepare_coco(tmp_path / "raw", tmp_path / "a", workers=0)
    prepare_coco(tmp_path / "raw", tmp_path / "b", workers=2)
    for p in sorted((tmp_path / "a").rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes(), p.name


def test_cli_prints_counts_and_the_rule(tree, tmp_path):
    result = _invoke("--coco-root", tree, "--out", tmp_path / "d", "--workers", 0)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "train: 2 ids of 4 images (2 dropped: 1 without annotations, 1 with no labelled pixel)" in lines
    assert "val: 2 ids of 2 images (0 dropped: 0 without annotations, 0 with no labelled pixel)" in lines
    assert lines[-1].endswith("4 labelled ids, 80 classes + background (crowd: background, overlaps: later wins)")
    assert _invoke("--help").exit_code == 0 and "--crowd" in _invoke("--help").output


def test_eval_runs_on_81_classes(tree, tmp_path):
    prepare_coco(tree, tmp_path / "d", workers=0)
    (tmp_path / "pred").mkdir()
    for image_id in open_dataset(tmp_path / "d").ids("train"):
        shutil.copy(tmp_path / "d" / "masks" / f"{image_id}.png", tmp_path / "pred")
    result = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path / "d"), "--split", "train", "--pred",
                                      str(tmp_path / "pred"), "--out", str(tmp_path / "m"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "mIoU 100.00% (81 classes, with background)" in result.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 81 and metrics["class_names"][80] == "toothbrush"


def _broken(tmp_path, edit):
    root = write_tree(tmp_path / "coco")
    edit(root)
    return root


def _set_json(split, change):
    def edit(root):
        path = root / "annotations" / f"instances_{split}.json"
        d = json.loads(path.read_text())
        change(d)
        path.write_text(json.dumps(d))
    return edit


BAD = [
    (lambda root: shutil.rmtree(root / "annotations"), ["--coco-root", "no annotations/ folder"]),
    (lambda root: [p.unlink() for p in (root / "annotations").iterdir()], ["neither", "instances_train2014.json"]),
    (lambda root: (root / "annotations" / "instances_val2014.json").write_text("{"), ["not a COCO instances file"]),
    (_set_json("train2014", lambda d: d["annotations"][0].update(category_id=12)), ["unknown category id 12"]),
    (_set_json("val2014", lambda d: d["categories"].pop()), ["categories differ"]),
    (_set_json("val2014", lambda d: d["images"][0].pop("file_name")), ["not a COCO instances file", "file_name"]),
    (lambda root: (root / "train2014" / "COCO_train2014_000000000009.jpg").unlink(),
     ["1 annotated images are missing", "COCO_train2014_000000000009.jpg"]),
    (lambda root: Image.new("RGB", (3, 3)).save(root / "val2014" / "COCO_val2014_000000000042.jpg"),
     ["COCO_val2014_000000000042.jpg", "is 3x3 but the annotations say 5x5"]),
    (lambda root: shutil.rmtree(root / "val2014"), ["no val2014/ folder"]),
]


@pytest.mark.parametrize("edit, fragments", BAD)
def test_bad_release_is_one_clear_line(tmp_path, edit, fragments):
    root = _broken(tmp_path, edit)
    assert_user_error(_invoke("--coco-root", root, "--out", tmp_path / "d", "--workers", 0), *fragments)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_bad_options(tmp_path, tree):
    assert_user_error(_invoke("--coco-root", tmp_path / "nope", "--out", tmp_path / "d"), "no such folder")
    assert _invoke("--coco-root", tree, "--out", tmp_path / "d", "--crowd", "x").exit_code == 2
    (tmp_path / "file").write_text("x")
    assert_user_error(_invoke("--coco-root", tree, "--out", tmp_path / "file", "--workers", 0), "regular file")


def test_images_under_an_images_folder_are_found(tree, tmp_path):
    (tree / "images").mkdir()
    for split in ("train2014", "val2014"):
        shutil.move(str(tree / split), str(tree / "images" / split))
    prepare_coco(tree, tmp_path / "d", workers=0)
    assert open_dataset(tmp_path / "d").image_path("000000000009").parent == tree / "images" / "train2014"


def test_val_alone_is_prepared(tree, tmp_path):
    (tree / "annotations" / "instances_train2014.json").unlink()
    shutil.rmtree(tree / "train2014")
    m = prepare_coco(tree, tmp_path / "d", workers=0)
    assert open_dataset(tmp_path / "d").splits() == ["val"] and list(m.extra["splits"]) == ["val"]
