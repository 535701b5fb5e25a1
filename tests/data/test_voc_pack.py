"""The VOC test-server packer: archive layout, palette PNGs, VOCevalseg's checks, and every refusal."""
import gzip
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from wsss.data.palette import VOC_PALETTE, write_label_png
from wsss.data.voc_pack import VOC2012_TEST_COUNT, pack_voc_results, result_folder
from wsss.errors import UserError

SIZES = {"2008_000001": (5, 7), "2008_000002": (6, 4), "2009_000003": (3, 3)}


@pytest.fixture
def preds(tmp_path):
    folder = tmp_path / "pred"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for image_id, (h, w) in SIZES.items():
        write_label_png(folder / f"{image_id}.png", rng.integers(0, 21, (h, w)).astype(np.uint8))
    # one grayscale ('L') prediction: its values are the labels too
    Image.fromarray(np.full((3, 3), 20, np.uint8), mode="L").save(folder / "2009_000003.png")
    (folder / "manifest.json").write_text("{}")
    return folder


def voc_evalseg_checks(png: Image.Image, size: tuple) -> None:
    """What VOCevalseg.m checks of a result: index values <= 20 and the image's size."""
    values = np.asarray(png)
    assert values.max() <= 20 and values.shape == size


def test_archive_layout_and_contents(preds, tmp_path):
    out = tmp_path / "results.tar.gz"
    summary = pack_voc_results(preds, list(SIZES), SIZES, out)
    assert summary["folder"] == "results/VOC2012/Segmentation/comp6_test_cls" and summary["num_items"] == 3
    assert out.read_bytes()[:2] == b"\x1f\x8b" and len(summary["sha256"]) == 64  # gzip, not a plain tar
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert names[:4] == ["results", "results/VOC2012", "results/VOC2012/Segmentation",
                         "results/VOC2012/Segmentation/comp6_test_cls"]
    assert set(files) == {f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in SIZES}
    for image_id, size in SIZES.items():
        png = Image.open(io.BytesIO(files[f"{summary['folder']}/{image_id}.png"]))
        assert png.mode == "P" and png.getpalette()[:63] == VOC_PALETTE[:63]
        voc_evalseg_checks(png, size)
        source = np.asarray(Image.open(preds / f"{image_id}.png"))
        assert np.array_equal(np.asarray(png), source)
    assert not list(tmp_path.glob("*.partial"))


def test_comp5_folder_and_names():
    assert result_folder("comp5") == "results/VOC2012/Segmentation/comp5_test_cls"
    with pytest.raises(ValueError, match="comp"):
        result_folder("comp6/../x")
    assert VOC2012_TEST_COUNT == 1456


def _other_modes(path, problem):
    """A 3 x 3 prediction for ``path`` in the form ``problem`` names (the 16-bit ones: 276 would wrap to 20)."""
    if problem.startswith("16-bit"):
        Image.fromarray(np.full((3, 3), 276 if problem == "16-bit" else 20, np.uint16)).save(path)
    elif problem == "alpha":
        Image.new("LA", (3, 3)).save(path)
    elif problem == "1-bit":
        Image.new("1", (3, 3)).save(path)
    elif problem == "jpeg":
        Image.new("L", (3, 3)).save(path, format="JPEG")
    elif problem == "21":
        Image.fromarray(np.full((3, 3), 21, np.uint8), mode="L").save(path)
    elif problem == "one-row-short":
        write_label_png(path, np.zeros((2, 3), np.uint8))


@pytest.mark.parametrize("problem, message", [
    ("missing", r"missing PNGs for 1 \(2008_000002\)"),
    ("extra", r"PNGs for 1 \(2010_999999\) ids outside the split"),
    ("size", r"2008_000001.png: prediction is 5x7 \(WxH\), its image is 7x5"),
    ("ignore", r"2009_000003.png: holds label 255"),
    ("rgb", r"2008_000002.png: a mode RGB PNG; the test server takes 8-bit palette \('P'\) or grayscale"),
    ("16-bit", r"2009_000003.png: a 16-bit PNG"),
    ("16-bit-small", r"2009_000003.png: a 16-bit PNG"),
    ("alpha", r"2009_000003.png: a mode LA PNG"),
    ("1-bit", r"2009_000003.png: a mode 1 PNG"),
    ("jpeg", r"2009_000003.png: JPEG data, not a PNG"),
    ("21", r"2009_000003.png: holds label 21; the test server accepts only 0..20"),
    ("one-row-short", r"2009_000003.png: prediction is 3x2 \(WxH\), its image is 3x3"),
    ("one-column-long", r"2008_000001.png: prediction is 8x5 \(WxH\), its image is 7x5"),
])
def test_refusals_name_the_file_and_write_nothing(preds, tmp_path, problem, message):
    if problem == "missing":
        (preds / "2008_000002.png").unlink()
    elif problem == "extra":
        write_label_png(preds / "2010_999999.png", np.zeros((2, 2), np.uint8))
    elif problem == "size":
        write_label_png(preds / "2008_000001.png", np.zeros((7, 5), np.uint8))
    elif problem == "ignore":
        labels = np.zeros((3, 3), np.uint8)
        labels[1, 1] = 255
        write_label_png(preds / "2009_000003.png", labels)
    elif problem == "rgb":
        Image.new("RGB", (4, 6)).save(preds / "2008_000002.png")
    else:
        _other_modes(preds / "2009_000003.png", problem)
        if problem == "one-column-long":
            write_label_png(preds / "2008_000001.png", np.zeros((5, 8), np.uint8))
    out = tmp_path / "results.tar.gz"
    with pytest.raises(UserError, match=message):
        pack_voc_results(preds, list(SIZES), SIZES, out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_output_path_and_count_checks(preds, tmp_path):
    with pytest.raises(UserError, match="gzip-compressed tar"):
        pack_voc_results(preds, list(SIZES), SIZES, tmp_path / "results.tar")
    with pytest.raises(UserError, match="expects 1456"):
        pack_voc_results(preds, list(SIZES), SIZES, tmp_path / "r.tgz", expected_count=VOC2012_TEST_COUNT)
    out = tmp_path / "r.tgz"
    out.write_bytes(b"old")
    with pytest.raises(UserError, match="already exists"):
        pack_voc_results(preds, list(SIZES), SIZES, out)
    assert out.read_bytes() == b"old"
    pack_voc_results(preds, list(SIZES), SIZES, out, overwrite=True)
    assert gzip.open(out).read(1)
    with pytest.raises(ValueError, match="no image size"):
        pack_voc_results(preds, list(SIZES), {}, tmp_path / "s.tgz")
    with pytest.raises(UserError, match="no such folder"):
        pack_voc_results(tmp_path / "nothing", list(SIZES), SIZES, tmp_path / "s.tgz")
