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

from wsss.artifacts import Manifest, input_record
from wsss.config import identity, runtime
from wsss.engine.distributed import init_distributed, open_output
from wsss.engine.inference import write_items
from wsss.errors import UserError
from wsss.ops.affinity import RADIUS, STRIDE, feature_affinity, source_size
from wsss.ops.crf import alpha_background_scores, labels_from_scores
from wsss.ops.random_walk import propagate_cams
from wsss.runtime import setup
from wsss.stages.crf_labels import cam_folder_ids, read_cam_item


MAX_LOGT = 16  # 2^16 sparse steps take tens of seconds per VOC image; the reference uses 8


@dataclasses.dataclass(frozen=True)
class AffInferConfig:
    data: Optional[Path] = None
    split: str = "train_aug"
    cams: Optional[Path] = None
    weights: Optional[Path] = None
    out: Optional[Path] = None
    backbone: Optional[str] = None
    alpha: float = 16.0
    beta: float = 8.0
    logt: int = 8
    radius: int = RADIUS
    device: str = runtime("auto")
    workers: int = runtime(0)
    seed: int = runtime(0)
    overwrite: bool = runtime(False)

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
        cams, classes = read_cam_item(self.cams_dir / f"{image_id}.npz", image.shape[:2], self.data.num_classes)
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


def _load_network(cfg: AffInferConfig, device: torch.device):
    from wsss.models.weights import load_network

    if not Path(cfg.weights).is_file():
        raise UserError(f"--weights {cfg.weights}: file not found")
    kwargs = {"backbone": cfg.backbone} if cfg.backbone else {}
    return load_network(cfg.weights, model="aff", **kwargs).to(device).eval()


def run(cfg: AffInferConfig) -> Manifest:
    """Write ``{id}.png`` for every id of the split into ``cfg.out``; returns its ``label`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.data.palette import write_label_png
    from wsss.models.normalization import normalization_for

    missing = [f"--{name}" for name in ("data", "cams", "weights", "out") if getattr(cfg, name) is None]
    if missing:
        raise UserError(f"aff infer: missing {', '.join(missing)} (give it as a flag or in --config)")
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    cam_folder_ids(cfg.cams, cfg.split, ids)
    device = setup(cfg.seed, cfg.device)
    dist = init_distributed(device)
    network = _load_network(cfg, device)
    normalization = normalization_for(getattr(network, "backbone_name", None) or cfg.backbone or "wideresnet38")
    inputs = {"data": input_record(cfg.data), "cams": input_record(cfg.cams), "weights": input_record(cfg.weights)}
    out = open_output(cfg.out, dist, kind="label", stage="aff_infer", config=identity(cfg), inputs=inputs,
                      overwrite=bool(cfg.overwrite))

    def compute(todo: list):
        loader = torch.utils.data.DataLoader(_Items(data, cfg.cams, todo), batch_size=1, collate_fn=_single,
                                             num_workers=cfg.workers or 0)
        for image_id, image, cams, classes in loader:
            _check_grid(image_id, image, cfg.radius)
            labels = refine(network, normalization, image, cams, classes, cfg, device)
            yield image_id, lambda path, lab=labels: write_label_png(path, lab, data.palette)

    return write_items(out, ids, dist, compute, split=cfg.split, extra={"classes": list(data.classes)})
