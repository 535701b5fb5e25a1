"""``wsss cam infer``: multi-scale, flipped CAMs of a trained classifier, written as a ``cam`` artifact.

PSA's inference (``infer_cls.py``): scales (1, 0.5, 1.5, 2), each with its flip; per input the ReLU'd class maps
at stride 8 are upsampled straight to the image size, masked by the image label, flipped back and summed; each
present class is divided by its maximum. ``--save-png`` also writes the argmax with a constant background score
(PSA's 0.2) as a ``label`` artifact in ``OUT/png``. Ids are split across ranks under ``torchrun``; a rerun after
a kill continues with the ids that are missing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from wsss.artifacts import Manifest, input_record
from wsss.config import identity, runtime
from wsss.engine.distributed import init_distributed, open_output
from wsss.engine.inference import each, write_items
from wsss.errors import UserError
from wsss.ops.multiscale import fuse_cams, normalize_cams, scaled_images
from wsss.runtime import setup


@dataclasses.dataclass(frozen=True)
class CamInferConfig:
    data: Optional[Path] = None
    split: str = "train_aug"
    weights: Optional[Path] = None
    out: Optional[Path] = None
    backbone: Optional[str] = None
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    save_png: bool = runtime(False)  # OUT/png is an artifact of its own; adding it later keeps the CAMs
    png_threshold: float = runtime(0.2)
    device: str = runtime("auto")
    workers: int = runtime(0)
    seed: int = runtime(0)
    overwrite: bool = runtime(False)

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise UserError(f"--scales: every scale must be > 0, got {self.scales}")
        if not 0 <= self.png_threshold <= 1:
            raise UserError(f"--png-threshold must lie in [0, 1], got {self.png_threshold}")


def class_maps(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Non-negative class maps at stride 8: (B, C, h, w), as the reference's ``forward_cam``."""
    if hasattr(network, "forward_cam"):
        return network.forward_cam(batch)
    return torch.relu(network(batch)["cams"])


@torch.no_grad()
def image_cams(network: torch.nn.Module, image: np.ndarray, labels: np.ndarray, num_classes: int, normalization,
               scales, flip: bool, device: torch.device) -> np.ndarray:
    """CAMs of one image for its present classes: (K, H, W) float32 in [0, 1], rows in ``labels`` order."""
    h, w = image.shape[:2]
    maps, flipped = [], []
    for scaled in scaled_images(image, scales):
        x = torch.as_tensor(normalization.apply(scaled))[None].float()
        if flip:
            x = torch.cat([x, x.flip(-1)])
        out = class_maps(network, x.to(device)).float().cpu()
        maps += list(out)
        flipped += [False, True] if flip else [False]
    mask = torch.zeros(num_classes)
    mask[torch.as_tensor(labels, dtype=torch.long)] = 1
    cams = normalize_cams(fuse_cams(maps, flipped, (h, w), mask))
    return cams[torch.as_tensor(labels, dtype=torch.long)].numpy().astype(np.float32)


def save_cam_npz(path: Path, cams: np.ndarray, classes: np.ndarray) -> None:
    """One item of a ``cam`` artifact: ``cams`` float32 (K, H, W), ``classes`` int64 (K,)."""
    with open(path, "wb") as f:
        np.savez(f, cams=cams, classes=classes.astype(np.int64))


def _load_network(cfg: CamInferConfig, num_classes: int, device: torch.device):
    from wsss.models.weights import load_network

    kwargs = {"num_classes": num_classes}
    if cfg.backbone:
        kwargs["backbone"] = cfg.backbone
    network = load_network(cfg.weights, model="cam", **kwargs)
    if getattr(network, "num_classes", num_classes) != num_classes:
        raise UserError(f"--weights {cfg.weights}: a classifier of {network.num_classes} classes, "
                        f"the dataset has {num_classes}")
    return network.to(device).eval()


def run(cfg: CamInferConfig) -> Manifest:
    """Write ``{id}.npz`` for every id of the split into ``cfg.out``; returns its ``cam`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.models.normalization import normalization_for

    if cfg.data is None or cfg.out is None or cfg.weights is None:
        raise UserError("--data, --weights and --out are required")
    if not Path(cfg.weights).is_file():
        raise UserError(f"--weights {cfg.weights}: file not found")
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    device = setup(cfg.seed, cfg.device)
    dist = init_distributed(device)
    network = _load_network(cfg, data.num_classes, device)
    backbone = getattr(network, "backbone_name", None) or cfg.backbone or "wideresnet38"
    norm = normalization_for(backbone)
    inputs = {"data": input_record(cfg.data), "weights": input_record(cfg.weights)}
    out = open_output(cfg.out, dist, kind="cam", stage="cam_infer", config=identity(cfg), inputs=inputs,
                      overwrite=bool(cfg.overwrite))

    def item(image_id: str):
        labels = data.labels(image_id)
        cams = image_cams(network, data.read_image(image_id), labels, data.num_classes, norm, cfg.scales, cfg.flip,
                          device)
        return lambda path: save_cam_npz(path, cams, np.asarray(labels))

    manifest = write_items(out, ids, dist, lambda todo: each(todo, item), split=cfg.split,
                           extra={"classes": list(data.classes)})
    if cfg.save_png:
        write_cam_pngs(cfg, data, ids, dist)
    return manifest


def write_cam_pngs(cfg: CamInferConfig, data, ids: list, dist) -> Manifest:
    """Label PNGs from the CAMs with a constant background score, as a ``label`` artifact in ``OUT/png``."""
    from wsss.data.palette import write_label_png
    from wsss.ops.cam import cams_to_labels

    folder = Path(cfg.out) / "png"
    out = open_output(folder, dist, kind="label", stage="cam_png",
                      config={"threshold": cfg.png_threshold}, inputs={"cams": input_record(cfg.out)},
                      overwrite=bool(cfg.overwrite))

    def item(image_id: str):
        with np.load(Path(cfg.out) / f"{image_id}.npz") as z:
            labels = cams_to_labels(z["cams"], z["classes"], threshold=cfg.png_threshold)
        return lambda path: write_label_png(path, labels, data.palette)

    return write_items(out, ids, dist, lambda todo: each(todo, item), split=cfg.split)
