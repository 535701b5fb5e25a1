"""Reading label PNGs: palette and grayscale give their values; wider grayscale only when the values fit 8 bits."""
import numpy as np
import pytest
from PIL import Image

from wsss.data.palette import read_label_png, write_label_png


def test_palette_and_grayscale_read_their_values(tmp_path):
    labels = np.array([[0, 1, 20], [255, 3, 0]], np.uint8)
    write_label_png(tmp_path / "p.png", labels)
    Image.fromarray(labels, mode="L").save(tmp_path / "l.png")
    for name in ("p.png", "l.png"):
        assert np.array_equal(read_label_png(tmp_path / name), labels)


def test_16_bit_png_within_8_bits_reads(tmp_path):
    labels = np.array([[0, 7], [255, 20]], np.uint16)
    Image.fromarray(labels).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    out = read_label_png(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, labels.astype(np.uint8))


def test_16_bit_png_beyond_8_bits_is_refused_not_wrapped(tmp_path):
    Image.fromarray(np.array([[0, 276]], np.uint16)).save(tmp_path / "wide.png")  # 276 would wrap to 20
    with pytest.raises(ValueError, match=r"wide\.png.*276"):
        read_label_png(tmp_path / "wide.png")


def test_rgb_png_is_refused(tmp_path):
    Image.new("RGB", (4, 3)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="palette or grayscale"):
        read_label_png(tmp_path / "rgb.png")
