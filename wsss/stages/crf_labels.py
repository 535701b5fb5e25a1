"""``wsss crf labels``: PSA's low/high-alpha CRF labels from a ``cam`` artifact, written as a ``label`` artifact.

Per image (PSA ``infer_cls.py``, ``_crf_with_alpha``): background ``(1 - max CAM) ** alpha`` stacked with the
CAMs, a dense CRF over the image (Gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 / compat 10,
10 iterations by default), argmax -> 0 = background, ``c + 1`` = class ``c``. Run it twice: a low alpha (4) gives
the confident foreground, a high alpha (PSA 32, SEAM 24) the confident background for ``wsss aff train``.

IRN's inter-pixel relation labels (``--fg-threshold 0.30 --bg-threshold 0.05`` instead of ``--alpha``; irn.md §3):
per threshold a constant background score in front of the CAMs, argmax, and a CRF started from those hard labels
(one-hot scores 0.7 / 0.3 / K, pydensecrf's ``unary_from_labels``) with IRN's preset (Gaussian 3/3, bilateral
50/5/10, 10 iterations; CRF options given override it); foreground from the first pass, background where both say
background, 255 (ignore) in between (:func:`wsss.ops.ir_labels.ir_labels_from_cams`).

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
from wsss.config import option, resolve_layered
from wsss.engine.inference import Context, InferenceStage, InferStageConfig
from wsss.errors import UserError
from wsss.ops import crf
from wsss.ops.ir_labels import IRN_CRF, ir_labels_from_cams
from wsss.process import LOG


@dataclasses.dataclass(frozen=True)
class CrfLabelsConfig(InferStageConfig):
    cams: Optional[Path] = option(None, "A `cam` artifact (from `wsss cam infer`).", required=True)
    alpha: Optional[float] = option(None, "Background exponent: (1 - max CAM)^alpha; low (4) = confident "
                                          "foreground, high (PSA 32, SEAM 24) = confident background.",
                                    type="positive")
    fg_threshold: Optional[float] = option(None, "IR labels (IRN, with --bg-threshold, instead of --alpha): "
                                                 "background score of the foreground pass (IRN 0.30).", type="fraction")
    bg_threshold: Optional[float] = option(None, "IR labels: background score of the background pass (IRN 0.05).",
                                           type="fraction")
    gaussian_sxy: float = option(crf.GAUSSIAN_SXY, "Gaussian kernel width in pixels.", type="positive")
    gaussian_compat: float = option(crf.GAUSSIAN_COMPAT, "Gaussian Potts weight.", type="non_negative")
    bilateral_sxy: float = option(crf.BILATERAL_SXY, "Bilateral kernel width in pixels.", type="positive")
    bilateral_srgb: float = option(crf.BILATERAL_SRGB, "Bilateral colour width.", type="positive")
    bilateral_compat: float = option(crf.BILATERAL_COMPAT, "Bilateral Potts weight.", type="non_negative")
    iterations: int = option(crf.ITERATIONS, "Mean-field iterations.", type="non_negative")

    def __post_init__(self):
        ir_mode = (self.fg_threshold, self.bg_threshold) != (None, None)
        if self.alpha is not None and ir_mode:
            raise UserError("--alpha (PSA) and --fg-threshold/--bg-threshold (IRN) exclude each other: give one")
        if self.alpha is None and not ir_mode:
            raise UserError("crf labels: missing --alpha (PSA) or --fg-threshold and --bg-threshold (IRN)")
        if ir_mode and not 0 < (self.bg_threshold or 0) <= (self.fg_threshold or 0) < 1:
            raise UserError(f"--fg-threshold and --bg-threshold must both be given with 0 < bg <= fg < 1, got "
                            f"{self.fg_threshold} and {self.bg_threshold}")
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
    from wsss.data.prepared import open_dataset

    return open_dataset(Path(root))


def label_one(data_root: str, cams_dir: str, image_id: str, alpha: Optional[float], crf_params: dict,
              thresholds: Optional[tuple] = None) -> np.ndarray:
    """CRF labels of one image, (H, W) uint8 (runs in a worker): PSA's with ``alpha``, IRN's IR labels with
    ``thresholds`` (fg, bg). Errors name the image id."""
    try:
        data = _dataset(data_root)
        image = data.read_image(image_id)
        fmt = FORMATS["cam"]
        cams, classes = fmt.read(fmt.path(cams_dir, image_id), image.shape[:2], data.num_classes)
        if thresholds is not None:
            return ir_labels_from_cams(image, cams, classes, *thresholds, crf_params=crf_params)
        return crf.crf_labels_from_cams(image, cams, classes, alpha, crf_params)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- re-raised with the id, never swallowed
        raise RuntimeError(f"crf labels: image {image_id}: {type(e).__name__}: {e}") from e


def _labels_in_order(cfg: CrfLabelsConfig, ids: list[str]) -> Iterator[np.ndarray]:
    """Labels of ``ids`` in order, computed here (workers 0/1) or on ``cfg.workers`` joblib processes."""
    args = (str(Path(cfg.data).resolve()), str(Path(cfg.cams).resolve()))
    mode = (cfg.alpha, cfg.crf_params()) + (() if cfg.alpha is not None else ((cfg.fg_threshold, cfg.bg_threshold),))
    if (cfg.workers or 0) <= 1:
        return (label_one(*args, image_id, *mode) for image_id in ids)
    from joblib import Parallel, delayed

    pool = Parallel(n_jobs=cfg.workers, backend="loky", return_as="generator")
    return pool(delayed(label_one)(*args, image_id, *mode) for image_id in ids)


class CrfLabels(InferenceStage):
    """Dense-CRF labels of a ``cam`` artifact with PSA's power background, as a ``label`` artifact."""

    name, config, kind = "crf_labels", CrfLabelsConfig, "label"
    required = ("data", "cams", "out")

    def resolve_config(self, config_file: Optional[Path] = None, flags: Optional[dict] = None,
                       recipe: Optional[dict] = None) -> CrfLabelsConfig:
        """In IR-label mode IRN's CRF preset goes under the values given (recipe, ``--config``, flags)."""
        return resolve_layered(CrfLabelsConfig, lambda cfg: IRN_CRF if cfg.fg_threshold is not None else {},
                               recipe=recipe, config_file=config_file, flags=flags)

    def check_inputs(self, cfg, data, ids: list) -> None:
        check_covers(cfg.cams, "cam", cfg.split, ids, "--cams")

    def input_artifacts(self, cfg) -> dict:
        return {"cams": cfg.cams}

    def compute(self, ctx: Context, todo: list):
        LOG.info("crf labels (%s): %d images on %d worker(s)", _mode(vars(ctx.cfg)), len(todo),
                 max(ctx.cfg.workers or 0, 1))
        return zip(todo, _labels_in_order(ctx.cfg, todo))

    def manifest_extra(self, ctx: Context) -> dict:
        return {"alpha": ctx.cfg.alpha, "classes": list(ctx.data.classes)}

    def summary(self, manifest) -> str:
        return (f"crf labels: {manifest.num_items} label PNGs ({manifest.split}, {_mode(manifest.config)}) in "
                f"{manifest.path}")


def _mode(config: dict) -> str:
    """``alpha A`` or ``IR labels, thresholds FG/BG`` from a config's values."""
    if config.get("alpha") is not None:
        return f"alpha {config['alpha']:g}"
    return f"IR labels, thresholds {config['fg_threshold']:g}/{config['bg_threshold']:g}"


STAGE = CrfLabels()
run = STAGE.run
