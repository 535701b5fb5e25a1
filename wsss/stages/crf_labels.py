"""``wsss crf labels``: PSA's low/high-alpha CRF labels from a ``cam`` artifact, written as a ``label`` artifact.

Per image (PSA ``infer_cls.py``, ``_crf_with_alpha``): background ``(1 - max CAM) ** alpha`` stacked with the
CAMs, a dense CRF over the image (Gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 / compat 10,
10 iterations by default), argmax -> 0 = background, ``c + 1`` = class ``c``. Run it twice: a low alpha (4) gives
the confident foreground, a high alpha (PSA 32, SEAM 24) the confident background for ``wsss aff train``.

PSA stores the CRF marginals; we store their argmax as a label PNG (what AffinityNet's labels use, see
:func:`wsss.ops.affinity.downsample_labels`). Images run in parallel on ``--workers`` processes (joblib); labels
are written by this process as they arrive, each atomically, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from wsss.artifacts import Manifest, OutputDir, input_record, read_manifest
from wsss.config import identity, runtime
from wsss.errors import UserError
from wsss.ops import crf
from wsss.runtime import LOG, setup


@dataclasses.dataclass(frozen=True)
class CrfLabelsConfig:
    data: Optional[Path] = None
    split: str = "train_aug"
    cams: Optional[Path] = None
    alpha: Optional[float] = None
    out: Optional[Path] = None
    gaussian_sxy: float = crf.GAUSSIAN_SXY
    gaussian_compat: float = crf.GAUSSIAN_COMPAT
    bilateral_sxy: float = crf.BILATERAL_SXY
    bilateral_srgb: float = crf.BILATERAL_SRGB
    bilateral_compat: float = crf.BILATERAL_COMPAT
    iterations: int = crf.ITERATIONS
    workers: int = runtime(0)
    overwrite: bool = runtime(False)

    def __post_init__(self):
        if self.alpha is not None and not self.alpha > 0:
            raise UserError(f"--alpha must be > 0, got {self.alpha}")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("gaussian_compat", "bilateral_compat"):
            if not getattr(self, name) >= 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.iterations < 0:
            raise UserError(f"--iterations must be >= 0, got {self.iterations}")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")

    def crf_params(self) -> dict:
        """Keyword arguments of :func:`wsss.ops.crf.dense_crf`."""
        names = ("gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat",
                 "iterations")
        return {name: getattr(self, name) for name in names}


def read_cam_item(path: Path, image_size: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One item of a ``cam`` artifact, checked: ``cams`` float32 (K, H, W) at ``image_size``, ``classes`` (K,).

    Raises:
        UserError: unreadable file, wrong keys/shapes, a size other than the image's, or classes out of range.
    """
    try:
        with np.load(path) as npz:
            cams, classes = npz["cams"], npz["classes"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UserError(f"{path}: not a CAM file with 'cams' (K, H, W) and 'classes' (K,) ({e})") from None
    if cams.ndim != 3 or classes.shape != cams.shape[:1] or not np.issubdtype(classes.dtype, np.integer):
        raise UserError(f"{path}: expected 'cams' (K, H, W) and integer 'classes' (K,), got shapes "
                        f"{cams.shape} and {classes.shape}")
    if cams.shape[1:] != tuple(image_size):
        raise UserError(f"{path}: CAMs are {cams.shape[2]}x{cams.shape[1]} but the image is "
                        f"{image_size[1]}x{image_size[0]}")
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes or len(set(classes.tolist())) < len(
            classes)):
        raise UserError(f"{path}: classes {classes.tolist()} are not distinct 0-based indices of the dataset's "
                        f"{num_classes} classes")
    if not np.isfinite(cams).all():
        raise UserError(f"{path}: CAMs contain NaN or infinite values")
    return cams.astype(np.float32, copy=False), classes.astype(np.int64)


def cam_folder_ids(folder: Path, split: str, split_ids: list[str]) -> Manifest:
    """Check that ``--cams`` is a complete ``cam`` artifact with a file for every id of the split.

    Files of ids outside the split are an error when the artifact was made for this split; when it was made
    for another split (e.g. train_aug CAMs used on train), they are expected and left out.
    """
    try:
        manifest = read_manifest(folder, kind="cam")
    except UserError as e:
        raise UserError(f"--cams {e}") from None
    present = {p.stem for p in Path(folder).glob("*.npz") if not p.name.startswith(".")}
    extra = sorted(present - set(split_ids))
    missing = [i for i in split_ids if i not in present]
    if extra and manifest.split not in (None, split):
        LOG.info("--cams %s: using %d of its %d '%s' CAM files for split '%s'", folder, len(present) - len(extra),
                 len(present), manifest.split, split)
    elif extra:
        raise UserError(f"--cams {folder}: {len(extra)} CAM files are not ids of split '{split}' (first: "
                        f"{', '.join(extra[:3])}); use the split the CAMs were made for "
                        f"('{manifest.split}')")
    if missing:
        raise UserError(f"--cams {folder}: no CAM file for {len(missing)} ids of split '{split}' (first: "
                        f"{', '.join(missing[:3])})")
    return manifest


@functools.lru_cache(maxsize=4)
def _dataset(root: str):
    from wsss.data.dataset import open_dataset

    return open_dataset(Path(root))


def label_one(data_root: str, cams_dir: str, image_id: str, alpha: float, crf_params: dict) -> np.ndarray:
    """CRF labels of one image, (H, W) uint8 (runs in a worker). Errors name the image id."""
    try:
        data = _dataset(data_root)
        image = data.read_image(image_id)
        cams, classes = read_cam_item(Path(cams_dir) / f"{image_id}.npz", image.shape[:2], data.num_classes)
        return crf.crf_labels_from_cams(image, cams, classes, alpha, crf_params)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- re-raised with the id, never swallowed
        raise RuntimeError(f"crf labels: image {image_id}: {type(e).__name__}: {e}") from e


def _labels_in_order(cfg: CrfLabelsConfig, ids: list[str]) -> Iterator[np.ndarray]:
    """Labels of ``ids`` in order, computed here (workers 0/1) or on ``cfg.workers`` joblib processes."""
    args = (str(Path(cfg.data).resolve()), str(Path(cfg.cams).resolve()))
    if (cfg.workers or 0) <= 1:
        return (label_one(*args, image_id, cfg.alpha, cfg.crf_params()) for image_id in ids)
    from joblib import Parallel, delayed

    pool = Parallel(n_jobs=cfg.workers, backend="loky", return_as="generator")
    return pool(delayed(label_one)(*args, image_id, cfg.alpha, cfg.crf_params()) for image_id in ids)


def run(cfg: CrfLabelsConfig) -> Manifest:
    """Write ``{id}.png`` for every id of the split into ``cfg.out``; returns its ``label`` manifest."""
    from wsss.data.palette import write_label_png

    missing = [f"--{name}" for name in ("data", "cams", "alpha", "out") if getattr(cfg, name) is None]
    if missing:
        raise UserError(f"crf labels: missing {', '.join(missing)} (give it as a flag or in --config)")
    setup(device="cpu")
    data = _dataset(str(Path(cfg.data).resolve()))
    ids = data.ids(cfg.split)
    cam_folder_ids(cfg.cams, cfg.split, ids)
    inputs = {"data": input_record(cfg.data), "cams": input_record(cfg.cams)}
    out = OutputDir.open(cfg.out, kind="label", stage="crf_labels", config=identity(cfg), inputs=inputs,
                         overwrite=bool(cfg.overwrite))
    if out.state == "done":
        LOG.info("%s: complete label artifact of the same config and inputs: nothing to do", cfg.out)
        return read_manifest(cfg.out, kind="label")
    todo = [i for i in ids if not out.has_item(i, ".png")]
    LOG.info("crf labels (alpha %g): %d of %d images to do on %d worker(s) (%s)", cfg.alpha, len(todo), len(ids),
             max(cfg.workers or 0, 1), out.state)
    for image_id, labels in zip(todo, _labels_in_order(cfg, todo)):
        out.write_item(image_id, ".png", lambda p, lab=labels: write_label_png(p, lab, data.palette))
    return out.complete(num_items=len(ids), split=cfg.split,
                        extra={"alpha": cfg.alpha, "classes": list(data.classes)})
