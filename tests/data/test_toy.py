"""The toy generator writes the real VOC 2012 / SBD layouts, readable by torchvision's own loaders."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import scipy.io

from wsss.data.classes import VOC_CLASSES
from wsss.data.palette import IGNORE_INDEX, read_label_png
from wsss.data.toy import write_toy
from tests.data.voc_xml import read_voc_xml
from wsss.data.voc import classes_present, read_id_list, read_sbd_mat
from wsss.errors import UserError


def _voc(root):
    return root / "VOCdevkit" / "VOC2012"


def _sbd(root):
    return root / "benchmark_RELEASE" / "dataset"


def test_layout_has_every_real_folder_and_list(toy_root):
    voc, sbd = _voc(toy_root), _sbd(toy_root)
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject"):
        assert (voc / sub).is_dir()
    for name in ("train", "val", "trainval"):
        assert (voc / "ImageSets" / "Segmentation" / f"{name}.txt").is_file()
    for sub in ("img", "cls", "inst"):
        assert (sbd / sub).is_dir()
    assert (sbd / "train.txt").is_file() and (sbd / "val.txt").is_file()
    train = read_id_list(voc / "ImageSets" / "Segmentation" / "train.txt")
    assert len(train) == 24 and train == sorted(train)
    assert all(len(i) == 11 and i[4] == "_" and i[:4].isdigit() and i[5:].isdigit() for i in train)


def test_torchvision_voc_segmentation_reads_the_toy(toy_root):
    from torchvision.datasets import VOCSegmentation

    ds = VOCSegmentation(str(toy_root), year="2012", image_set="train", download=False)
    assert len(ds) == 24
    image, target = ds[0]
    assert image.mode == "RGB" and target.mode == "P"
    mask = np.array(target)
    assert image.size == target.size
    assert IGNORE_INDEX in mask and mask.max() == IGNORE_INDEX and (mask[mask != 255] <= 20).all()
    val = VOCSegmentation(str(toy_root), year="2012", image_set="val", download=False)
    assert len(val) == 8


def test_torchvision_sbdataset_reads_the_toy(toy_root):
    from torchvision.datasets import SBDataset

    ds = SBDataset(str(_sbd(toy_root)), image_set="train", mode="segmentation", download=False)
    assert len(ds) == 22
    image, target = ds[0]
    assert image.size == target.size
    seg = np.array(target)
    assert seg.dtype == np.uint8 and seg.max() <= 20 and seg.max() >= 1 and IGNORE_INDEX not in seg
    bounds = SBDataset(str(_sbd(toy_root)), image_set="val", mode="boundaries", download=False)
    image, edges = bounds[0]
    assert edges.shape == (20, image.size[1], image.size[0])
    assert edges.sum() > 0


def test_sbd_mat_structs_look_like_the_real_ones(toy_root):
    sbd = _sbd(toy_root)
    image_id = read_id_list(sbd / "train.txt")[0]
    gt = scipy.io.loadmat(sbd / "cls" / f"{image_id}.mat")["GTcls"][0, 0]
    seg = gt["Segmentation"]
    assert seg.dtype == np.uint8 and seg.ndim == 2
    cats = gt["CategoriesPresent"].ravel().tolist()
    assert cats == sorted(set(np.unique(seg).tolist()) - {0})
    assert gt["Boundaries"].shape == (20, 1)
    inst = scipy.io.loadmat(sbd / "inst" / f"{image_id}.mat")["GTinst"][0, 0]
    n = int(inst["Segmentation"].max())
    assert inst["Categories"].shape == (n, 1) and inst["Boundaries"].shape == (n, 1)
    assert read_sbd_mat(sbd / "cls" / f"{image_id}.mat", 20).categories == tuple(cats)


def test_xml_objects_match_the_mask_classes(toy_root):
    voc = _voc(toy_root)
    for image_id in read_id_list(voc / "ImageSets" / "Segmentation" / "trainval.txt"):
        ann = read_voc_xml(voc / "Annotations" / f"{image_id}.xml")
        mask = read_label_png(voc / "SegmentationClass" / f"{image_id}.png")
        assert ann.filename == f"{image_id}.jpg" and ann.size == mask.shape
        named = {VOC_CLASSES.index(o.name) for o in ann.objects}
        assert set(classes_present(mask, 20).tolist()) <= named
        for o in ann.objects:
            xmin, ymin, xmax, ymax = o.box
            assert 1 <= xmin < xmax <= mask.shape[1] and 1 <= ymin < ymax <= mask.shape[0]


def test_sbd_masks_differ_from_voc_masks_where_both_exist(toy_root):
    voc, sbd = _voc(toy_root), _sbd(toy_root)
    shared = set(read_id_list(sbd / "train.txt")) & set(read_id_list(voc / "ImageSets/Segmentation/train.txt"))
    assert shared
    for image_id in sorted(shared)[:4]:
        v = read_label_png(voc / "SegmentationClass" / f"{image_id}.png")
        s = read_sbd_mat(sbd / "cls" / f"{image_id}.mat", 20).segmentation
        inside = v != IGNORE_INDEX
        assert (v != s).any()
        assert (v[inside] == s[inside]).mean() > 0.9  # same objects, coarser outline


def test_images_have_a_grey_body_and_a_small_coloured_part(toy_root):
    """The class is told by a small part: the object's saturated pixels are a minority of its mask."""
    from PIL import Image

    voc = _voc(toy_root)
    fractions = []
    for image_id in read_id_list(voc / "ImageSets" / "Segmentation" / "train.txt"):
        rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"), np.float32)
        mask = read_label_png(voc / "SegmentationClass" / f"{image_id}.png")
        fg = (mask > 0) & (mask != IGNORE_INDEX)
        saturation = rgb.max(-1) - rgb.min(-1)
        fractions.append((saturation[fg] > 60).mean())
    assert 0.03 < np.median(fractions) < 0.4


def test_generation_is_deterministic_by_seed(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix != ".mat":  # .mat headers carry a timestamp
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    write_toy(tmp_path / "a", n_train=4, n_val=2, size=40, seed=3)
    write_toy(tmp_path / "b", n_train=4, n_val=2, size=40, seed=3)
    write_toy(tmp_path / "c", n_train=4, n_val=2, size=40, seed=4)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def _class_counts(root, splits) -> Counter:
    counts = Counter()
    for image_id in splits.voc_train + splits.voc_val + splits.sbd_only:
        ann = read_voc_xml(_voc(root) / "Annotations" / f"{image_id}.xml")
        counts.update(o.name for o in ann.objects)
    return counts


def test_every_class_appears_several_times(tmp_path):
    splits = write_toy(tmp_path, n_train=60, n_val=10, size=40, seed=1, classes=20)
    counts = _class_counts(tmp_path, splits)
    assert set(counts) == set(VOC_CLASSES)
    assert min(counts.values()) >= 3


def test_the_default_world_draws_four_classes_evenly_with_distinct_parts(tmp_path):
    import colorsys

    from wsss.data.toy_world import DRAW_ORDER, PART_COLOURS

    counts = _class_counts(tmp_path, write_toy(tmp_path, n_train=40, n_val=10, size=40, seed=2))
    assert set(counts) == {VOC_CLASSES[c] for c in DRAW_ORDER[:4]}
    assert max(counts.values()) - min(counts.values()) <= 3  # successive permutations: as many of each
    hues = sorted(360 * colorsys.rgb_to_hsv(*(PART_COLOURS[c] / 255))[0] for c in DRAW_ORDER[:4])
    assert np.allclose(np.diff(hues), 90, atol=1)  # 90 degrees apart: more than twice the +-36 of hue jitter
    assert len({(c + c // 20) % 4 for c in DRAW_ORDER[:4]}) == 4  # and four patterns
    assert sorted(DRAW_ORDER) == list(range(20))


def test_bodies_are_bright_and_coherent_on_a_dark_background(toy_root):
    """What lets a CRF or learned affinities find the object: its body differs from the background, not inside."""
    from PIL import Image

    voc = _voc(toy_root)
    gaps, spreads = [], []
    for image_id in read_id_list(voc / "ImageSets" / "Segmentation" / "train.txt"):
        rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"), np.float32)
        grey, saturation = rgb.mean(-1), rgb.max(-1) - rgb.min(-1)
        mask = read_label_png(voc / "SegmentationClass" / f"{image_id}.png")
        instances = read_label_png(voc / "SegmentationObject" / f"{image_id}.png")
        background = np.percentile(grey[mask == 0], 95)
        for n in set(np.unique(instances).tolist()) - {0, IGNORE_INDEX}:
            body = (instances == n) & (saturation < 30)  # the object without its coloured part
            spreads.append(grey[body].std())
            gaps.append(np.median(grey[body]) - background)
    assert max(spreads) < 20  # one region: stripes and grain only
    assert min(gaps) > 15


def test_roles_follow_the_documented_rule():
    import numpy as np

    from wsss.data.toy import _assign_roles

    s = _assign_roles(np.random.default_rng(0), 8, 4)
    assert len(s.voc_train) == 8 and len(s.voc_val) == 4 and len(s.sbd_only) == 4
    t, v, e = s.voc_train, s.voc_val, s.sbd_only
    assert set(s.sbd_train) == {t[1], t[2], t[5], t[6], v[0], e[0], e[1], e[3]}
    assert set(s.sbd_val) == {t[3], t[7], v[2], e[2]}


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_val": 0}, {"size": 8}, {"classes": 0}, {"classes": 21}])
def test_bad_arguments_are_user_errors(tmp_path, kwargs):
    with pytest.raises(UserError):
        write_toy(tmp_path, **kwargs)
