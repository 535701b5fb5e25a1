"""``wsss irn infer``: IRN's semantic pseudo labels, the stride-4 CAMs walked along the boundaries (irn.md §5).

Per image (``make_sem_seg_labels``): the normalised image and its flip, zero-padded bottom/right to 512 x 512 (the
network's group norms see the padding, so the size matters), give the boundary map, averaged in logit space and
cropped to the stride-4 grid; boundary -> pair affinities (radius 5, a max over shifted slices); the CAMs times
``1 - boundary`` walk ``2 ** logt`` steps on ``A ** beta`` through our sparse random walk (the image padded with
boundary on the left, right and bottom, as IRN); then x4 upsampling, crop, division by the *global* max, a
constant background 0.25, argmax. The CAMs are IRN's stride-4 ``cam``: the ``cams_stride4`` array of the ``cam``
artifact (``wsss cam infer`` of an ``irn_cam`` classifier, or ``wsss cam import --format irn``).
``--approx-stride4`` accepts an artifact without it and resizes its full-size CAMs instead (not IRN's CAM).

Departure: where every walked score is 0 the label is background (IRN divides by zero). Ids are split across
ranks under ``torchrun``; a rerun after a kill continues with the missing ids.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from wsss.artifacts.items import FORMATS, check_covers
from wsss.config import option
from wsss.engine.inference import Context, InferenceStage, NetworkInferConfig
from wsss.errors import UserError
from wsss.ops.irn import BETA, LABEL_STRIDE, LOGT, SEM_THRESHOLD, propagate_boundaries, semantic_labels
from wsss.ops.multiscale import normalize_cams
from wsss.ops.path_index import INFER_RADIUS

STRIDE4 = "cams_stride4"  # the cam item array this stage walks from
PAD_SIZE = 512


@dataclasses.dataclass(frozen=True)
class IrnInferConfig(NetworkInferConfig):
    cams: Optional[Path] = option(None, "A `cam` artifact with IRN's stride-4 CAMs (`wsss cam infer` of an irn_cam "
                                        "classifier, or `wsss cam import --format irn`).", required=True)
    beta: float = option(float(BETA), "Power applied to the affinities.", type="positive")
    logt: int = option(LOGT, "The walk takes 2^logt steps.", type="logt")
    radius: int = option(INFER_RADIUS, "Pair radius of the walk on the stride-4 grid.", type="count")
    threshold: float = option(SEM_THRESHOLD, "Constant background score after the global max.", type="fraction")
    pad: int = option(PAD_SIZE, "Images are zero-padded (bottom/right) to this square size before the network "
                                "(its group norms see the padding).", type="count")
    approx_stride4: bool = option(False, "Accept CAMs without the stride-4 array: resize the full-size ones (not "
                                         "IRN's CAM).", type="flag")

    def __post_init__(self):
        if not self.beta > 0:
            raise UserError(f"--beta must be > 0, got {self.beta}")
        if not 0 <= self.logt <= 16:
            raise UserError(f"--logt must be in [0, 16], got {self.logt}")
        if self.radius < 2:
            raise UserError(f"--radius must be >= 2, got {self.radius}")
        if not 0 < self.threshold < 1:
            raise UserError(f"--threshold must lie in (0, 1), got {self.threshold}")
        if self.pad < LABEL_STRIDE:
            raise UserError(f"--pad must be >= {LABEL_STRIDE}, got {self.pad}")


def stride4_cams(path: Path, cams: np.ndarray, extras: dict, size: tuple[int, int], approx: bool) -> np.ndarray:
    """The item's stride-4 CAMs (K, ceil(H / 4), ceil(W / 4)); with ``approx``, resized from the full-size ones."""
    grid = (-(-size[0] // LABEL_STRIDE), -(-size[1] // LABEL_STRIDE))
    if STRIDE4 not in extras:
        if not approx:
            raise UserError(f"--cams {path}: no stride-4 CAMs ('{STRIDE4}'); make them with `wsss cam infer` of an "
                            f"irn_cam classifier (or `cam import --format irn`), or pass --approx-stride4")
        if not len(cams):
            return np.zeros((0, *grid), np.float32)
        small = F.interpolate(torch.from_numpy(cams)[None], size=grid, mode="bilinear", align_corners=False)[0]
        return normalize_cams(small).numpy()
    if extras[STRIDE4].shape != (len(cams), *grid):
        raise UserError(f"--cams {path}: '{STRIDE4}' has shape {extras[STRIDE4].shape}, expected "
                        f"{(len(cams), *grid)} for a {size[1]}x{size[0]} image")
    return extras[STRIDE4].astype(np.float32)


@torch.inference_mode()
def walk_labels(network: torch.nn.Module, image: torch.Tensor, cams: torch.Tensor, classes: np.ndarray,
                cfg: IrnInferConfig) -> np.ndarray:
    """IRN's label map of one image: (3, H, W) normalised, (K, h, w) stride-4 CAMs -> (H, W) uint8."""
    boundary = network.infer(image, pad_size=cfg.pad)["boundary"]
    if boundary.shape != cams.shape[1:]:
        raise UserError(f"--weights: the boundary map is {tuple(boundary.shape)} for a {tuple(image.shape[1:])} "
                        f"image, expected the stride-4 grid {tuple(cams.shape[1:])}")
    walked = propagate_boundaries(cams.to(boundary), boundary, cfg.radius, cfg.beta, cfg.logt)
    return semantic_labels(walked, classes, tuple(image.shape[1:]), cfg.threshold)


class IrnInfer(InferenceStage):
    """IRN's boundary random walk (network ``irn``) of a ``cam`` artifact's stride-4 CAMs, as a ``label`` artifact."""

    name, config, kind, model = "irn_infer", IrnInferConfig, "label", "irn"
    required = ("data", "cams", "weights", "out")

    def check_inputs(self, cfg, data, ids: list) -> None:
        check_covers(cfg.cams, "cam", cfg.split, ids, "--cams")
        self.read(cfg, data, ids[0])  # an artifact without the stride-4 CAMs is refused before anything is written

    def input_artifacts(self, cfg) -> dict:
        return {"cams": cfg.cams, "weights": cfg.weights}

    def read(self, cfg, data, image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), stride-4 CAMs (K, h, w), classes (K,)) of one id."""
        image = data.read_image(image_id)
        fmt = FORMATS["cam"]
        path = fmt.path(cfg.cams, image_id)
        cams, classes, extras = fmt.read(path, image.shape[:2], data.num_classes, extras=True)
        return image, stride4_cams(path, cams, extras, image.shape[:2], cfg.approx_stride4), classes

    def load(self, ctx: Context, image_id: str) -> dict:
        """The normalised image (3, H, W), its stride-4 CAMs (K, h, w) and classes (K,)."""
        image, cams, classes = self.read(ctx.cfg, ctx.data, image_id)
        return {"image": torch.as_tensor(ctx.normalization.apply(image)).float(), "cams": torch.from_numpy(cams),
                "classes": classes}

    def predict(self, ctx: Context, image_id: str, loaded: dict) -> np.ndarray:
        x, cams = (loaded[key].to(ctx.device, non_blocking=True) for key in ("image", "cams"))
        return walk_labels(ctx.network, x, cams, loaded["classes"], ctx.cfg)


STAGE = IrnInfer()
run = STAGE.run
