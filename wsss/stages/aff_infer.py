"""``wsss aff infer``: CAMs refined by a random walk on AffinityNet's affinities, written as a ``label`` artifact.

PSA's ``infer_aff.py`` per image: the normalised image padded with 0 on the bottom/right to a multiple of 8,
AffinityNet features -> pair affinities (radius 5); background ``(1 - max CAM) ** alpha`` at full size stacked
with the CAMs, zero-padded, 8x8 average-pooled; random walk with ``A ** beta``, ``2 ** logt`` steps; bilinear
upsampling, crop, argmax. The walk is our sparse one (same labels as the reference's dense ``N x N`` squaring, at
O(N) memory; see :mod:`wsss.ops.random_walk`). Ids are split across ranks under ``torchrun``; rank 0 completes
the manifest. A rerun after a kill continues with the missing ids.
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
from wsss.ops.affinity import RADIUS, STRIDE, feature_affinity, source_size
from wsss.ops.crf import alpha_background_scores, labels_from_scores
from wsss.ops.random_walk import propagate_cams

MAX_LOGT = 16  # 2^16 sparse steps take tens of seconds per VOC image; the reference uses 8


@dataclasses.dataclass(frozen=True)
class AffInferConfig(NetworkInferConfig):
    cams: Optional[Path] = option(None, "A `cam` artifact (from `wsss cam infer`).", required=True)
    alpha: float = option(16.0, "Background exponent (1 - max CAM)^alpha.", type="positive")
    beta: float = option(8.0, "Power applied to the affinities.", type="positive")
    logt: int = option(8, "The walk takes 2^logt steps.", type="logt")
    radius: int = option(RADIUS, "Pair radius at stride 8.", type="count")

    def __post_init__(self):
        if not self.alpha > 0:
            raise UserError(f"--alpha must be > 0, got {self.alpha}")
        if not self.beta > 0:
            raise UserError(f"--beta must be > 0, got {self.beta}")
        if not 0 <= self.logt <= MAX_LOGT:
            raise UserError(f"--logt must be in [0, {MAX_LOGT}] (0 = one step; the walk takes 2^logt sparse steps), "
                            f"got {self.logt}")
        if self.radius < 2:
            raise UserError(f"--radius must be >= 2, got {self.radius}")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")


class _Items(torch.utils.data.Dataset):
    """(id, image uint8 (H, W, 3), cams (K, H, W), classes (K,)) per id, read in DataLoader workers."""

    def __init__(self, data, cams_dir: Path, ids: list[str]):
        self.data, self.cams_dir, self.ids = data, Path(cams_dir), ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        fmt = FORMATS["cam"]
        cams, classes = fmt.read(fmt.path(self.cams_dir, image_id), image.shape[:2], self.data.num_classes)
        return image_id, image, cams, classes


def _single(batch: list):
    return batch[0]


@torch.no_grad()
def image_affinity(network: torch.nn.Module, image: torch.Tensor, radius: int) -> torch.Tensor:
    """Pair affinities of one normalised image (3, H, W), padded with 0 to a multiple of 8: (P, h', w')."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (0, -width % STRIDE, 0, -height % STRIDE))
    features = network(padded[None])["features"]
    grid = (padded.shape[-2] // STRIDE, padded.shape[-1] // STRIDE)
    if tuple(features.shape[-2:]) != grid:
        raise UserError(f"--weights: the network's features are {tuple(features.shape[-2:])} for a "
                        f"{tuple(padded.shape[-2:])} input, expected {grid} (AffinityNet must have stride {STRIDE})")
    return feature_affinity(features.float(), radius)[0]


def refine(network: torch.nn.Module, normalization, image: np.ndarray, cams: np.ndarray, classes: np.ndarray,
           cfg: AffInferConfig, device: torch.device) -> np.ndarray:
    """Random-walk labels of one image: (H, W) uint8, 0 = background, ``c + 1`` = class ``c``."""
    x = torch.as_tensor(normalization.apply(image)).float().to(device)
    aff = image_affinity(network, x, cfg.radius)
    scores = torch.from_numpy(alpha_background_scores(cams, cfg.alpha)).to(device)
    walked = propagate_cams(scores, aff, cfg.beta, cfg.logt, cfg.radius)
    return labels_from_scores(walked, classes)


def _check_grid(image_id: str, image: np.ndarray, radius: int) -> None:
    height, width = image.shape[:2]
    try:
        source_size(-(-height // STRIDE), -(-width // STRIDE), radius)
    except ValueError:
        raise UserError(f"image {image_id} is {width}x{height}: at stride {STRIDE} it is too small for --radius "
                        f"{radius} (needs at least {STRIDE * (2 * radius - 2) + 1}x{STRIDE * (radius - 1) + 1} "
                        f"pixels); use a smaller --radius") from None


class AffInfer(InferenceStage):
    """PSA's random walk: AffinityNet (``aff``) affinities refine a ``cam`` artifact into a ``label`` artifact."""

    name, config, kind, model = "aff_infer", AffInferConfig, "label", "aff"
    required = ("data", "cams", "weights", "out")

    def check_inputs(self, cfg, data, ids: list) -> None:
        check_covers(cfg.cams, "cam", cfg.split, ids, "--cams")

    def input_artifacts(self, cfg) -> dict:
        return {"cams": cfg.cams, "weights": cfg.weights}

    def compute(self, ctx: Context, todo: list):
        cfg = ctx.cfg
        loader = torch.utils.data.DataLoader(_Items(ctx.data, cfg.cams, todo), batch_size=1, collate_fn=_single,
                                             num_workers=cfg.workers or 0)
        for image_id, image, cams, classes in loader:
            _check_grid(image_id, image, cfg.radius)
            yield image_id, refine(ctx.network, ctx.normalization, image, cams, classes, cfg, ctx.device)


STAGE = AffInfer()
run = STAGE.run
