"""Image files to uint8 RGB arrays: JPEGs through ``torchvision.io.decode_jpeg``, the rest through Pillow.

Both libraries decode JPEGs with libjpeg-turbo, and on the installations measured (``benchmarks/decode_speed.py``)
``decode_jpeg`` gave Pillow's pixels bit for bit (4:2:0 and 4:4:4, progressive, greyscale, CMYK, odd sizes) about
1.3x faster. Builds of the two libraries can differ (another libjpeg, another IDCT), so the fast path is taken only
after a check, once per process, that it reproduces Pillow on a test image; otherwise every file goes through
Pillow. JPEGs of other than 1 (grey) or 3 (YCbCr) components (CMYK, whose Adobe inversion the two libraries may
treat differently) go through Pillow too. Neither path applies EXIF orientation (the datasets' masks are in the
stored orientation). torchvision 0.29 deprecated its image decoders (for TorchCodec): their warning is silenced
here, and once they are gone the check fails and Pillow reads everything.
"""
from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-frame markers (0xC0-0xCF except DHT 0xC4, JPG 0xC8, DAC 0xCC): their segment holds the component count.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def pil_rgb(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an encoded image, by Pillow (``convert("RGB")``). Raises ``OSError`` if unreadable."""
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


def _decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) RGB of JPEG bytes by ``torchvision.io.decode_jpeg``; raises ``RuntimeError`` on bad data."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
    return np.ascontiguousarray(decoded.permute(1, 2, 0).numpy())


@functools.lru_cache(maxsize=1)
def decode_jpeg_matches_pil() -> bool:
    """Whether ``decode_jpeg`` gives Pillow's pixels on a test JPEG (odd size, 4:2:0 chroma, edges and noise)."""
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8), 7, 0), 7, 1)[:61, :83]
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    try:
        return bool(np.array_equal(_decode_jpeg(buffer.getvalue()), pil_rgb(buffer.getvalue())))
    except (ImportError, RuntimeError):
        return False


def jpeg_components(data: bytes) -> int:
    """The number of colour components of JPEG bytes (from the start-of-frame segment); 0 if none is found."""
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return 0
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in SOF_MARKERS:
            return data[pos + 9]
        if marker == 0xDA:  # start of scan before any frame header: not a valid JPEG
            return 0
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return 0


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file, Pillow's pixels (see the module docstring for the JPEG path).

    Raises:
        OSError: the file cannot be read or decoded.
    """
    data = Path(path).read_bytes()
    if data[:3] == JPEG_MAGIC and jpeg_components(data) in (1, 3) and decode_jpeg_matches_pil():
        try:
            return _decode_jpeg(data)
        except RuntimeError:  # what libjpeg refuses, Pillow may still read (or explain)
            pass
    return pil_rgb(data)
