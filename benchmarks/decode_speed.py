"""JPEG decoding for the training transforms: Pillow against ``torchvision.io.decode_jpeg``, timed and compared pixel
for pixel.

The images are synthetic photographs (smooth colour fields, edges and sensor-like noise) of VOC's 500x375 size,
written by Pillow at quality 95 in a temporary folder, plus a few variants real datasets hold (4:4:4 chroma,
progressive, greyscale, CMYK, an odd size). Three readers turn a file into the uint8 (H, W, 3) RGB array the
training transforms take (:meth:`wsss.data.prepared.PreparedData.read_image`'s contract):

* ``pil``: ``np.array(Image.open(path).convert("RGB"))``, what the dataset reader did;
* ``decode_jpeg``: ``torchvision.io.decode_jpeg(file bytes, mode=RGB)`` to (H, W, 3);
* ``wsss``: :func:`wsss.data.image_decode.read_rgb`, the reader in use (whichever of the two it picks, with its
  checks).

Each reader is timed over all the files (best of ``--repeats``), alone and followed by the PSA classifier's training
transform (random long side 256-512, flip, jitter, normalise, crop 448) so the share of decoding in a sample's
loading cost shows. ``max |diff|`` and ``equal`` compare each reader's pixels with Pillow's on every file.

Usage:
    python benchmarks/decode_speed.py [--n 200] [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEIGHT, WIDTH = 375, 500


def synthetic_photo(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 (H, W, 3): a bicubic-upsampled coarse colour field, two hard-edged shapes, Gaussian noise."""
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(2):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(30, 120)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """``n`` VOC-like JPEGs (quality 95, Pillow's default 4:2:0) and the variants; returns (main set, variants)."""
    rng = np.random.default_rng(seed)
    main = []
    for i in range(n):
        main.append(folder / f"img_{i:04d}.jpg")
        Image.fromarray(synthetic_photo(rng)).save(main[-1], quality=95)
    photo = Image.fromarray(synthetic_photo(rng))
    variants = {"444.jpg": (photo, {"subsampling": 0}), "progressive.jpg": (photo, {"progressive": True}),
                "grey.jpg": (photo.convert("L"), {}), "cmyk.jpg": (photo.convert("CMYK"), {}),
                "odd_333x251.jpg": (photo.resize((333, 251)), {})}
    paths = []
    for name, (image, options) in variants.items():
        paths.append(folder / name)
        image.save(paths[-1], quality=95, **options)
    return main, paths


def read_pil(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


def read_decode_jpeg(path: Path) -> np.ndarray:
    from torchvision.io import ImageReadMode, decode_jpeg

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    return np.ascontiguousarray(decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy())


def read_wsss(path: Path) -> np.ndarray:
    from wsss.data.image_decode import read_rgb

    return read_rgb(path)


READERS = {"pil": read_pil, "decode_jpeg": read_decode_jpeg, "wsss": read_wsss}


def best_time(fn, paths: list[Path], repeats: int) -> float:
    """Best wall time over ``repeats`` passes of ``fn`` over every path, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return best


def compare(reader, paths: list[Path]) -> tuple[int, bool]:
    """(max |reader - Pillow| over every pixel of every file, every file bit-identical); a failure counts as -1."""
    worst, equal = 0, True
    for p in paths:
        try:
            ours = reader(p)
        except Exception:  # noqa: BLE001 - a reader that cannot read a file is reported, not fatal
            return -1, False
        ref = read_pil(p)
        if ours.shape != ref.shape:
            return -1, False
        diff = int(np.abs(ours.astype(np.int16) - ref.astype(np.int16)).max())
        worst, equal = max(worst, diff), equal and diff == 0 and ours.dtype == ref.dtype
    return worst, equal


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="500x375 JPEGs to decode")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="--n 60 --repeats 2")
    p.add_argument("--threads", type=int, default=1, help="torch threads (decode_jpeg is single-threaded)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 60, 2
    torch.set_num_threads(args.threads)
    import torchvision

    from wsss.data.transforms import JointTransform, JointTransformConfig
    from wsss.models.normalization import normalization_for

    transform = JointTransform(JointTransformConfig.psa_cls(), normalization_for("wideresnet38"))
    print(f"# decode_speed: Pillow {Image.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}), "
          f"torchvision {torchvision.__version__}, {args.n} JPEGs {WIDTH}x{HEIGHT} q95, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        main_set, variants = write_images(Path(tmp), args.n)
        rows = []
        for name, reader in READERS.items():
            decode = best_time(reader, main_set, args.repeats)
            torch.manual_seed(0)
            loaded = best_time(lambda q: transform(reader(q)), main_set, args.repeats)
            rows.append((name, decode, loaded, *compare(reader, main_set), *compare(reader, variants)))
    base = rows[0][1]
    print("| reader | decode ms/img | x Pillow | decode + psa_cls transform ms/img | max abs diff (q95 set) | "
          "bit-identical | max abs diff (variants) | variants identical |")
    print("|---|---|---|---|---|---|---|---|")
    for name, decode, loaded, diff, equal, vdiff, vequal in rows:
        print(f"| {name} | {1e3 * decode / args.n:.2f} | {base / decode:.2f} | {1e3 * loaded / args.n:.2f} | "
              f"{diff} | {'yes' if equal else 'no'} | {vdiff} | {'yes' if vequal else 'no'} |")
    print("variants: " + ", ".join(v.name for v in variants) + " (-1: the reader failed or changed the shape)")


if __name__ == "__main__":
    main()
