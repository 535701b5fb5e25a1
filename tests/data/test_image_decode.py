"""The image reader: torchvision's JPEG decoder only where it gives Pillow's pixels, Pillow for everything else."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import wsss.data.image_decode as decode
from wsss.data.image_decode import decode_jpeg_matches_pil, jpeg_components, read_rgb


def _photo(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = np.repeat(np.repeat(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8), 8, 0),
                       8, 1)[:height, :width]
    return Image.fromarray(np.clip(blocks + rng.normal(0, 12, blocks.shape), 0, 255).astype(np.uint8))


def _plain_pil(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


FILES = {  # name -> (image mode, save options)
    "voc.jpg": ("RGB", {"quality": 95}),  # 500x375, Pillow's default 4:2:0 chroma
    "444.jpg": ("RGB", {"quality": 95, "subsampling": 0}),
    "progressive.jpg": ("RGB", {"quality": 90, "progressive": True}),
    "grey.jpg": ("L", {"quality": 95}),
    "cmyk.jpg": ("CMYK", {"quality": 95}),
    "image.png": ("RGB", {}),
    "palette.png": ("P", {}),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    for i, (name, (mode, options)) in enumerate(FILES.items()):
        size = (375, 500) if name == "voc.jpg" else (61, 83)
        paths[name] = folder / name
        _photo(*size, seed=i).convert(mode).save(paths[name], **options)
    return paths


@pytest.mark.parametrize("name", list(FILES))
def test_read_rgb_gives_pillows_pixels(files, name):
    ours, ref = read_rgb(files[name]), _plain_pil(files[name])
    assert ours.dtype == np.uint8 and ours.shape == ref.shape and ours.flags["C_CONTIGUOUS"]
    assert np.array_equal(ours, ref)


def test_jpegs_of_one_or_three_components_take_the_fast_path(files, monkeypatch):
    if not decode_jpeg_matches_pil():
        pytest.skip("torchvision's decode_jpeg differs from Pillow on this installation: Pillow reads everything")
    used = []
    fast = decode._decode_jpeg
    monkeypatch.setattr(decode, "_decode_jpeg", lambda data: used.append(1) or fast(data))
    for name in ("voc.jpg", "grey.jpg", "cmyk.jpg", "image.png"):
        read_rgb(files[name])
    assert len(used) == 2  # voc.jpg and grey.jpg; CMYK and PNG through Pillow


def test_a_decoder_that_differs_from_pillow_is_not_used(files, monkeypatch):
    decode.decode_jpeg_matches_pil.cache_clear()
    monkeypatch.setattr(decode, "_decode_jpeg", lambda data: decode.pil_rgb(data) // 2 * 2)  # off by one here and there
    try:
        assert not decode.decode_jpeg_matches_pil()
        assert np.array_equal(read_rgb(files["voc.jpg"]), _plain_pil(files["voc.jpg"]))
    finally:
        decode.decode_jpeg_matches_pil.cache_clear()


def test_component_count_from_the_frame_header():
    for mode, count in (("RGB", 3), ("L", 1), ("CMYK", 4)):
        for progressive in (False, True):
            buffer = io.BytesIO()
            Image.new(mode, (20, 10)).save(buffer, "JPEG", progressive=progressive)
            assert jpeg_components(buffer.getvalue()) == count
    assert jpeg_components(b"\xff\xd8\xff\xda\x00\x02") == 0
    assert jpeg_components(b"\xff\xd8") == 0


def test_truncated_and_foreign_files_are_os_errors(files, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(files["voc.jpg"].read_bytes()[:5000])
    with pytest.raises(OSError):
        read_rgb(truncated)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(OSError):
        read_rgb(text)
