"""The toy generator's COCO format: the real COCO 2014 release layout, read by pycocotools' own API."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.cli.main import cli
from wsss.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from wsss.data.toy_coco import uncompressed_rle, write_toy_coco
from wsss.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_toy")
    return root, write_toy_coco(root, n_train=12, n_val=5, size=48, seed=0)


def _instances(root, split):
    return json.loads((root / "annotations" / f"instances_{split}2014.json").read_text())


def test_layout_names_and_keys_are_the_release_ones(toy):
    root, written = toy
    for split, n in (("train", 12), ("val", 5)):
        d = _instances(root, split)
        assert set(d) == {"info", "licenses", "images", "annotations", "categories"}
        assert [c["id"] for c in d["categories"]] == list(COCO_CATEGORY_IDS)
        assert [c["name"] for c in d["categories"]] == list(COCO_CLASSES)
        assert len(d["images"]) == n and tuple(f"{im['id']:012d}" for im in d["images"]) == written.images[split]
        for im in d["images"]:
            assert im["file_name"] == f"COCO_{split}2014_{im['id']:012d}.jpg"
            with Image.open(root / f"{split}2014" / im["file_name"]) as img:
                assert img.format == "JPEG" and img.size == (im["width"], im["height"])
        assert {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"} <= set(d["annotations"][0])
    assert not set(written.images["train"]) & set(written.images["val"])
    assert COCO_CATEGORY_IDS[-1] == 90 and len(COCO_CATEGORY_IDS) == 80 and 12 not in COCO_CATEGORY_IDS


def test_polygons_rles_and_crowds_are_all_there_and_decode(toy):
    from pycocotools.coco import COCO

    root, _ = toy
    api = COCO(str(root / "annotations" / "instances_train2014.json"))
    kinds = set()
    for ann in api.dataset["annotations"]:
        seg = ann["segmentation"]
        kind = "polygons" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], list) else "compressed"
        kinds.add((kind, ann["iscrowd"]))
        mask = api.annToMask(ann)
        assert mask.sum() == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
    assert kinds == {("polygons", 0), ("compressed", 0), ("rle", 1)}
    assert all(len(a["segmentation"]) == 2 for a in api.dataset["annotations"] if isinstance(a["segmentation"], list))


def test_roles_last_image_bare_and_one_crowd_only(toy):
    root, written = toy
    for split, n in (("train", 12), ("val", 5)):
        d = _instances(root, split)
        ids = [im["id"] for im in d["images"]]
        by_image = {i: [a["iscrowd"] for a in d["annotations"] if a["image_id"] == i] for i in ids}
        assert by_image[ids[-1]] == [] and by_image[ids[-2]] == [1]
        assert all(0 in by_image[i] for i in ids[:-2])
        assert written.kept[split] == tuple(sorted(f"{i:012d}" for i in ids[:-2]))
        assert [bool(1 in by_image[i]) for i in ids[:-2]] == [k % 4 == 1 for k in range(n - 2)]


def test_uncompressed_rle_hand_worked():
    mask = np.array([[0, 1, 1], [0, 1, 0]], bool)  # column-major: 0 0 | 1 1 | 1 0
    assert uncompressed_rle(mask) == {"counts": [2, 3, 1], "size": [2, 3]}
    assert uncompressed_rle(np.ones((2, 2), bool)) == {"counts": [0, 4], "size": [2, 2]}
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((7, 9)) < 0.4
        rle = mask_utils.frPyObjects(uncompressed_rle(m), 7, 9)
        np.testing.assert_array_equal(mask_utils.decode(rle), m)


def test_deterministic_by_seed(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_toy_coco(tmp_path / name, n_train=3, n_val=1, size=32, seed=seed)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_val": 0}, {"size": 16}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UserError):
        write_toy_coco(tmp_path, **kwargs)


def test_cli_format_coco_then_prepare(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "toy", "--format", "coco", "--out", str(tmp_path / "raw"), "--n-train", "4",
                                 "--n-val", "3", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "train 4 images (2 with objects), val 3 (1)" in result.output
    assert (tmp_path / "raw" / "annotations" / "instances_val2014.json").is_file()
    result = runner.invoke(cli, ["data", "prepare", "coco", "--coco-root", str(tmp_path / "raw"), "--out",
                                 str(tmp_path / "d"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "train: 2 ids of 4 images (2 dropped: 1 without annotations, 1 with no labelled pixel)" in result.output
    assert_user_error(runner.invoke(cli, ["data", "toy", "--format", "coco", "--out", str(tmp_path / "raw")]),
                      "not empty")
    assert runner.invoke(cli, ["data", "toy", "--format", "ade", "--out", str(tmp_path / "x")]).exit_code == 2


def test_cli_format_voc_is_the_default(tmp_path):
    runner = CliRunner()
    args = ["--n-train", "2", "--n-val", "1", "--size", "32", "--seed", "7"]
    default = runner.invoke(cli, ["data", "toy", "--out", str(tmp_path / "a"), *args])
    voc = runner.invoke(cli, ["data", "toy", "--format", "voc", "--out", str(tmp_path / "b"), *args])
    assert default.exit_code == voc.exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jpg"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
