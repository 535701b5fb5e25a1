"""The PASCAL VOC test-server archive of segmentation results (``retrain.md`` §5), checked before it is written.

Layout (VOCdevkit ``VOCinit.m`` / ``VOCevalseg.m``), a gzip-compressed tar rooted at ``results/``::

    results/VOC2012/Segmentation/{comp}_{testset}_cls/{id}.png      e.g. comp6_test_cls/2008_000001.png

``comp6`` = own training data allowed (anything ImageNet- or COCO-pretrained); ``comp5`` = VOC data only. The
server's evaluator reads each PNG's **indices**, errors on a value above 20 (so no 255) or on a size other than the
image's. Every PNG is therefore re-encoded here as an indexed ('P') PNG with the VOC colour map (RGB PNGs or
adaptive palettes give wrong indices), after checking: exactly the given ids (none missing, none extra), each
prediction an 8-bit 'P' or 'L' PNG (16-bit and other modes are refused) of exactly its image's size, values in
0..num_classes-1. Nothing is written unless every check passes.

Example (``sizes`` maps each id to its image's (H, W))::

    summary = pack_voc_results(pred_dir, data.ids("test"), sizes, Path("results.tar.gz"),
                               expected_count=VOC2012_TEST_COUNT)
    summary["folder"], summary["num_items"]   # 'results/VOC2012/Segmentation/comp6_test_cls', 1456
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from wsss.data.palette import VOC_PALETTE, read_label_png, write_label_png
from wsss.errors import UserError

RESULTS_ROOT = "results/VOC2012/Segmentation"
VOC_NUM_CLASSES = 21
VOC2012_TEST_COUNT = 1456
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
SHOW = 3  # ids named per problem
LABEL_MODES = ("P", "L")  # PIL modes whose 8-bit values are the labels (16-bit ones would be cut to 8 bits)


def result_folder(comp: str = "comp6", testset: str = "test") -> str:
    """The folder the server reads: ``results/VOC2012/Segmentation/{comp}_{testset}_cls``."""
    if not re.fullmatch(r"comp[0-9]+", comp) or not re.fullmatch(r"[A-Za-z0-9_]+", testset):
        raise ValueError(f"comp must look like comp6 and testset like test, got {comp!r} and {testset!r}")
    return f"{RESULTS_ROOT}/{comp}_{testset}_cls"


def _listing(ids: Sequence[str]) -> str:
    return f"{len(ids)} ({', '.join(ids[:SHOW])}{', ...' if len(ids) > SHOW else ''})"


def _check_ids(pred_dir: Path, ids: Sequence[str], sizes: Mapping[str, tuple],
               expected_count: Optional[int]) -> None:
    """Exactly one PNG per id, no PNG for another id, a size for every id, the expected count."""
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"ids must be non-empty and unique, got {len(ids)} ids ({len(set(ids))} distinct)")
    no_size = [i for i in ids if i not in sizes]
    if no_size:
        raise ValueError(f"no image size for {_listing(no_size)} ids")
    if not pred_dir.is_dir():
        raise UserError(f"--pred {pred_dir}: no such folder")
    if expected_count is not None and len(ids) != expected_count:
        raise UserError(f"the split has {len(ids)} ids, the test server expects {expected_count}")
    present = {p.stem for p in pred_dir.glob("*.png")}
    wanted = set(ids)
    missing = [i for i in ids if i not in present]
    extra = sorted(present - wanted)
    if missing or extra:
        parts = [f"missing PNGs for {_listing(missing)} ids"] if missing else []
        parts += [f"PNGs for {_listing(extra)} ids outside the split"] if extra else []
        raise UserError(f"--pred {pred_dir}: " + "; ".join(parts) + " (expected exactly one PNG per id)")


def checked_png(path: Path, size: tuple, num_classes: int) -> bytes:
    """Read one prediction, check it, and re-encode it as a VOC-palette PNG.

    Args:
        path: a label PNG (palette or grayscale; its indices are the labels).
        size: (H, W) of the image it predicts.
        num_classes: labels must lie in 0..num_classes-1 (no 255).

    Returns:
        The PNG bytes to archive.

    Raises:
        UserError: naming the file, for an unreadable file or one that is not a PNG, a mode other than 8-bit
            palette ('P') or grayscale ('L') (RGB, 16-bit, 1-bit, with alpha...), a wrong size or an out-of-range
            value.
    """
    try:
        with Image.open(path) as image:
            mode, fmt = image.mode, image.format
    except OSError as e:
        raise UserError(f"{path}: cannot read the PNG ({e})") from None
    if fmt != "PNG":
        raise UserError(f"{path}: {fmt} data, not a PNG (lossy formats change label values)")
    if mode not in LABEL_MODES:
        kind = "a 16-bit" if mode.startswith("I;16") else f"a mode {mode}"
        raise UserError(f"{path}: {kind} PNG; the test server takes 8-bit palette ('P') or grayscale ('L') indices")
    try:
        labels = read_label_png(path)
    except OSError as e:
        raise UserError(f"{path}: cannot read the PNG ({e})") from None
    if labels.shape != tuple(size):
        raise UserError(f"{path}: prediction is {labels.shape[1]}x{labels.shape[0]} (WxH), its image is "
                        f"{size[1]}x{size[0]}")
    top = int(labels.max(initial=0))
    if top >= num_classes:
        raise UserError(f"{path}: holds label {top}; the test server accepts only 0..{num_classes - 1} "
                        f"(predictions never contain the ignore value 255)")
    buffer = io.BytesIO()
    write_label_png(buffer, labels.astype(np.uint8), VOC_PALETTE)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", directory: bool = False, mtime: float = 0.0) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(mtime)
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def _write_archive(out: Path, folder: str, pngs: Mapping[str, bytes]) -> None:
    """The tar.gz through a temporary name, renamed when complete."""
    partial = out.with_name(out.name + ".partial")
    now = time.time()
    try:
        with tarfile.open(partial, "w:gz") as tar:
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                _add(tar, "/".join(parts[:depth]), directory=True, mtime=now)
            for image_id, data in pngs.items():
                _add(tar, f"{folder}/{image_id}.png", data, mtime=now)
        os.replace(partial, out)
    finally:
        if partial.exists():
            partial.unlink()


def pack_voc_results(pred_dir: Path, ids: Sequence[str], sizes: Mapping[str, tuple], out: Path, *,
                     comp: str = "comp6", testset: str = "test", num_classes: int = VOC_NUM_CLASSES,
                     expected_count: Optional[int] = None, overwrite: bool = False) -> dict:
    """Check a folder of label PNGs and pack it as the VOC test-server archive.

    Args:
        pred_dir: folder with ``{id}.png`` per id (a ``label`` artifact; other files such as manifest.json are
            ignored).
        ids: the split's ids (VOC 2012 ``test``: 1,456).
        sizes: id -> (H, W) of its image.
        out: the archive to write, ending in ``.tar.gz`` or ``.tgz``.
        comp: competition, ``comp6`` (own training data) or ``comp5`` (VOC only).
        testset: the split name in the folder name (``test``).
        num_classes: labels allowed are 0..num_classes-1 (21 on VOC).
        expected_count: if given, the number of ids required (``VOC2012_TEST_COUNT`` for the real server).
        overwrite: replace an existing ``out``.

    Returns:
        ``{"archive": str, "folder": str, "num_items": int, "sha256": str}``.

    Raises:
        UserError: for anything wrong in the predictions or the output path (nothing is written then).
        ValueError: for malformed arguments (duplicate ids, an id without a size, a bad ``comp``).
    """
    pred_dir, out = Path(pred_dir), Path(out)
    folder = result_folder(comp, testset)
    if not out.name.endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"--out {out}: the test server takes a gzip-compressed tar; name it .tar.gz or .tgz")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out}: already exists (pass --overwrite to replace it)")
    _check_ids(pred_dir, list(ids), sizes, expected_count)
    pngs = {i: checked_png(pred_dir / f"{i}.png", tuple(sizes[i]), num_classes) for i in ids}
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_archive(out, folder, pngs)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {"archive": str(out), "folder": folder, "num_items": len(pngs), "sha256": digest}
