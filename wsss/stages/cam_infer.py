"""``wsss cam infer``: multi-scale, flipped CAMs of a trained classifier, written as a ``cam`` artifact.

PSA's inference (``infer_cls.py``): scales (1, 0.5, 1.5, 2), each with its flip; per input the ReLU'd class maps
at stride 8 are upsampled straight to the image size, masked by the image label, flipped back and summed; each
present class is divided by its maximum. ``--save-png`` also writes the argmax with a constant background score
(PSA's 0.2) as a ``label`` artifact in ``OUT/png``. Ids are split across ranks under ``torchrun``; a rerun after
a kill continues with the ids that are missing.

The network is the one the checkpoint names (any of the registry's ``cam`` family; ``--model`` for a plain state
dict, ``cam`` by default), and the fusion is the network's unless ``--fusion`` says otherwise: ``irn`` (for
``irn_cam``) is IRN's ``make_cam`` (irn.md §2.4): per scale the map of the image plus the flipped-back map of its
flip, summed over scales at the 16-rounded size and cropped (``cams``), and resized straight to the stride-4 grid
(the optional item array ``cams_stride4``, which ``irn infer`` walks from); only the image's classes are kept.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from wsss.artifacts import Manifest, input_record
from wsss.artifacts.items import FORMATS
from wsss.config import option, runtime
from wsss.engine.distributed import open_output
from wsss.engine.inference import Context, InferenceStage, NetworkInferConfig, write_items
from wsss.errors import UserError
from wsss.ops.irn import fuse_cams_irn
from wsss.ops.multiscale import fuse_scale_outputs, normalize_cams, scaled_inputs


@dataclasses.dataclass(frozen=True)
class CamInferConfig(NetworkInferConfig):
    model: Optional[str] = option(None, "Network of a plain (original authors') state dict; our checkpoints name "
                                        "their own. Default: cam.", type="model:cam")
    fusion: Optional[str] = option(None, "Scale fusion: psa (infer_cls) or irn (make_cam, also stores the stride-4 "
                                         "CAM). Default: the network's (irn for irn_cam).", type="choice:psa|irn")
    scales: tuple[float, ...] = option((1.0, 0.5, 1.5, 2.0), "Comma-separated scales.", type="floats")
    flip: bool = option(True, "Add the flipped image at every scale (--no-flip: do not).")
    save_png: bool = runtime(False, "Also write label PNGs (constant background) to OUT/png.", type="flag")
    png_threshold: float = runtime(0.2, "Background score for --save-png.", type="fraction")

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise UserError(f"--scales: every scale must be > 0, got {self.scales}")
        if not 0 <= self.png_threshold <= 1:
            raise UserError(f"--png-threshold must lie in [0, 1], got {self.png_threshold}")
        if self.fusion not in (None, "psa", "irn"):
            raise UserError(f"--fusion must be psa or irn, got {self.fusion!r}")


def class_maps(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Non-negative class maps at stride 8: (B, C, h, w), as the reference's ``forward_cam``."""
    if hasattr(network, "forward_cam"):
        return network.forward_cam(batch)
    return torch.relu(network(batch)["cams"])


def scale_outputs(network: torch.nn.Module, inputs: Sequence[torch.Tensor],
                  device: torch.device) -> Iterator[torch.Tensor]:
    """Per input of :func:`~wsss.ops.multiscale.scaled_inputs` (the image, and its flip, at one scale), the class
    maps: (1 or 2, C, h_s, w_s) float32 on the CPU."""
    for x in inputs:
        yield class_maps(network, x.to(device, non_blocking=True)).float().cpu()


def psa_fuse(outputs: Iterable[torch.Tensor], labels: np.ndarray, size: tuple[int, int], num_classes: int,
             flip: bool) -> np.ndarray:
    """PSA's fusion of the per-scale class maps of :func:`scale_outputs`: (K, H, W) float32 in [0, 1], rows in
    ``labels`` order (the image's 0-based classes); ``size`` is the image's (H, W)."""
    mask = torch.zeros(num_classes)
    mask[torch.as_tensor(labels, dtype=torch.long)] = 1
    cams = normalize_cams(fuse_scale_outputs(outputs, flip, size, mask))
    return cams[torch.as_tensor(labels, dtype=torch.long)].numpy().astype(np.float32)


def irn_fuse(outputs: Iterable[torch.Tensor], labels: np.ndarray,
             size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """IRN's fusion of the per-scale class maps of :func:`scale_outputs` for the image's classes: ``high_res``
    (K, H, W) and the stride-4 ``cam`` (K, ceil(H / 4), ceil(W / 4)), float32 in [0, 1), rows in ``labels`` order."""
    keep = torch.as_tensor(labels, dtype=torch.long)
    maps = [(out[0] + out[1].flip(-1) if len(out) == 2 else out[0])[keep] for out in outputs]
    high_res, stride4 = fuse_cams_irn(maps, size)
    return high_res.numpy().astype(np.float32), stride4.numpy().astype(np.float32)


@torch.inference_mode()
def image_cams(network: torch.nn.Module, image: np.ndarray, labels: np.ndarray, num_classes: int, normalization,
               scales, flip: bool, device: torch.device) -> np.ndarray:
    """PSA's CAMs of one image for its present classes: (K, H, W) float32 in [0, 1], rows in ``labels`` order."""
    inputs = scaled_inputs(image, normalization, scales, flip)
    return psa_fuse(scale_outputs(network, inputs, device), labels, image.shape[:2], num_classes, flip)


class CamInfer(InferenceStage):
    """PSA's multi-scale + flip CAMs of the classifier ``cam``, as a ``cam`` artifact."""

    name, config, kind, model = "cam_infer", CamInferConfig, "cam", "cam"
    required = ("data", "weights", "out")

    def load_network(self, cfg, data):
        from wsss.models.weights import load_network

        network = load_network(cfg.weights, model=cfg.model, default_model=self.model, family="cam",
                               num_classes=data.num_classes, backbone=cfg.backbone)
        if getattr(network, "num_classes", data.num_classes) != data.num_classes:
            raise UserError(f"--weights {cfg.weights}: a classifier of {network.num_classes} classes, "
                            f"the dataset has {data.num_classes}")
        return network

    def settle(self, cfg, network):
        """The fusion of the network (``cam_fusion``: irn for ``irn_cam``) unless ``--fusion`` chose one."""
        return cfg if cfg.fusion else dataclasses.replace(cfg, fusion=getattr(network, "cam_fusion", "psa"))

    def load(self, ctx: Context, image_id: str) -> dict:
        """The image's classes (K,) and (H, W), and its network inputs per scale (``scaled_inputs``)."""
        image = ctx.data.read_image(image_id)
        return {"labels": np.asarray(ctx.data.labels(image_id)), "size": image.shape[:2],
                "inputs": scaled_inputs(image, ctx.normalization, ctx.cfg.scales, ctx.cfg.flip)}

    def predict(self, ctx: Context, image_id: str, loaded: dict):
        labels, size, cfg = loaded["labels"], tuple(loaded["size"]), ctx.cfg
        outputs = scale_outputs(ctx.network, loaded["inputs"], ctx.device)
        if cfg.fusion == "irn":
            high_res, stride4 = irn_fuse(outputs, labels, size)
            return high_res, labels, {"cams_stride4": stride4}
        return psa_fuse(outputs, labels, size, ctx.data.num_classes, cfg.flip), labels

    def after(self, ctx: Context, manifest: Manifest) -> Manifest:
        if ctx.cfg.save_png:
            write_cam_pngs(ctx.cfg, ctx.data, ctx.data.ids(ctx.cfg.split), ctx.dist)
        return manifest

    def summary(self, manifest: Manifest) -> str:
        return f"cam infer: {manifest.num_items} CAM files ({manifest.split}) in {manifest.path}"


def write_cam_pngs(cfg: CamInferConfig, data, ids: list, dist) -> Manifest:
    """Label PNGs from the CAMs with a constant background score, as a ``label`` artifact in ``OUT/png``."""
    from wsss.ops.cam import cams_to_labels

    folder = Path(cfg.out) / "png"
    out = open_output(folder, dist, kind="label", stage="cam_png",
                      config={"threshold": cfg.png_threshold}, inputs={"cams": input_record(cfg.out)},
                      overwrite=bool(cfg.overwrite))
    cam, label = FORMATS["cam"], FORMATS["label"]

    def compute(todo: list):
        for image_id in todo:
            cams, classes = cam.read(cam.path(cfg.out, image_id))
            yield image_id, cams_to_labels(cams, classes, threshold=cfg.png_threshold)

    return write_items(out, ids, dist, compute, lambda path, labels: label.write(path, labels, data.palette),
                       split=cfg.split)


STAGE = CamInfer()
run = STAGE.run
