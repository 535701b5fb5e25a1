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

from wsss.artifacts.items import FORMATS, check_covers
from wsss.config import option
from wsss.engine.inference import Context, InferenceStage, InferStageConfig
from wsss.errors import UserError
from wsss.ops import crf
from wsss.runtime import LOG


@dataclasses.dataclass(frozen=True)
class CrfLabelsConfig(InferStageConfig):
    cams: Optional[Path] = option(None, "A `cam` artifact (from `wsss cam infer`).", required=True)
    alpha: Optional[float] = option(None, "Required. Background exponent: (1 - max CAM)^alpha; low (4) = confident "
                                          "foreground, high (PSA 32, SEAM 24) = confident background.",
                                    type="positive")
    gaussian_sxy: float = option(crf.GAUSSIAN_SXY, "Gaussian kernel width in pixels.", type="positive")
    gaussian_compat: float = option(crf.GAUSSIAN_COMPAT, "Gaussian Potts weight.", type="non_negative")
    bilateral_sxy: float = option(crf.BILATERAL_SXY, "Bilateral kernel width in pixels.", type="positive")
    bilateral_srgb: float = option(crf.BILATERAL_SRGB, "Bilateral colour width.", type="positive")
    bilateral_compat: float = option(crf.BILATERAL_COMPAT, "Bilateral Potts weight.", type="non_negative")
    iterations: int = option(crf.ITERATIONS, "Mean-field iterations.", type="non_negative")

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


@functools.lru_cache(maxsize=4)
def _dataset(root: str):
    from wsss.data.dataset import open_dataset

    return open_dataset(Path(root))


def label_one(data_root: str, cams_dir: str, image_id: str, alpha: float, crf_params: dict) -> np.ndarray:
    """CRF labels of one image, (H, W) uint8 (runs in a worker). Errors name the image id."""
    try:
        data = _dataset(data_root)
        image = data.read_image(image_id)
        fmt = FORMATS["cam"]
        cams, classes = fmt.read(fmt.path(cams_dir, image_id), image.shape[:2], data.num_classes)
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


class CrfLabels(InferenceStage):
    """Dense-CRF labels of a ``cam`` artifact with PSA's power background, as a ``label`` artifact."""

    name, config, kind = "crf_labels", CrfLabelsConfig, "label"
    required = ("data", "cams", "alpha", "out")

    def check_inputs(self, cfg, data, ids: list) -> None:
        check_covers(cfg.cams, "cam", cfg.split, ids, "--cams")

    def input_artifacts(self, cfg) -> dict:
        return {"cams": cfg.cams}

    def compute(self, ctx: Context, todo: list):
        LOG.info("crf labels (alpha %g): %d images on %d worker(s)", ctx.cfg.alpha, len(todo),
                 max(ctx.cfg.workers or 0, 1))
        return zip(todo, _labels_in_order(ctx.cfg, todo))

    def manifest_extra(self, ctx: Context) -> dict:
        return {"alpha": ctx.cfg.alpha, "classes": list(ctx.data.classes)}

    def summary(self, manifest) -> str:
        return (f"crf labels: {manifest.num_items} label PNGs ({manifest.split}, alpha {manifest.config['alpha']:g}) "
                f"in {manifest.path}")


STAGE = CrfLabels()
run = STAGE.run
