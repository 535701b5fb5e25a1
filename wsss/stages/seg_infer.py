"""``wsss seg infer``: the retrained segmentation network's labels for every image of a split, as a ``label`` artifact.

Per image: for each scale ``s`` of ``--scales`` (times ``short_side / min(H, W)`` when ``--short-side`` is given)
the image is resized (PIL bicubic; scale 1 is the image itself), normalised for the network, and fed with its
horizontal flip under ``--flip``. The network's ``logits`` (DeepLab-v2: the MSC max, at stride 8) are resized
bilinearly to H x W (``align_corners`` per recipe), un-flipped, and merged over the inputs by ``--fuse`` (element-wise
max or mean); softmax gives the probabilities; ``--crf`` refines them with the dense CRF of ``--crf-params``
(:func:`wsss.ops.crf.dense_crf`) on ``--crf-image``; the label is the argmax, 0..C: never 255, and no image-level
label (ground truth or predicted) is used, so ``test`` runs like any split.

``--crf-image deeplab_pytorch`` reproduces deeplab-pytorch's CRF input: the BGR image minus the Caffe mean, cast to
uint8 with negative values wrapping modulo 256 (``retrain.md`` §3); ``rgb`` is the photo itself. ``--recipe``
selects a published recipe's inference settings (:mod:`wsss.stages.seg_recipes`).

Weights: our ``seg train`` checkpoints, or the authors' releases (deeplab-pytorch, sscb, torchvision state dicts:
the network is recognised from the keys unless ``--model`` says).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.config import option, preset_option
from wsss.engine.inference import Context, InferenceStage, NetworkInferConfig
from wsss.errors import UserError
from wsss.models.normalization import CAFFE_BGR_MEAN
from wsss.models.registry import check_family
from wsss.ops.multiscale import scaled_inputs
from wsss.stages.seg_recipes import DLP_CRF, INFER_PRESETS
from wsss.stages.seg_train import FAMILY

CRF_IMAGES = ("deeplab_pytorch", "rgb")
# A key only one network's original files have -> that network.
ORIGINAL_KEYS = {"aspp.c0.weight": "deeplabv2_resnet101", "base.aspp.c0.weight": "deeplabv2_resnet101",
                 "cls_conv.weight": "deeplabv1_resnet38", "fc8_seg_conv2.weight": "deeplabv1_resnet38",
                 "fc8_voc12.weight": "deeplab_largefov_vgg16", "classifier.4.weight": "deeplabv3_resnet101"}


@dataclasses.dataclass(frozen=True)
class SegInferConfig(NetworkInferConfig):
    PRESETS: ClassVar[dict] = INFER_PRESETS

    split: str = "val"
    recipe: str = preset_option(INFER_PRESETS, "dlp-coco", "Published inference settings (under --config and "
                                                           "the flags):")
    model: Optional[str] = option(None, "Network of an original (non-wsss) weights file (default: from its keys).",
                                  type=f"model:{FAMILY}")
    scales: tuple = option((1.0,), "Comma-separated input scales.", type="floats")
    flip: bool = option(False, "Add the flipped image at every scale.")
    fuse: str = option("max", "How the inputs' logits are merged.", type="choice:max|mean")
    short_side: Optional[int] = option(None, "Resize the short side to this before the scales (torchvision: 520).",
                                       type="count")
    align_corners: bool = False
    crf: bool = option(False, "Refine the probabilities with a dense CRF (--crf-params).", type="flag")
    crf_params: tuple = option(DLP_CRF, "Gaussian sxy,compat, bilateral sxy,srgb,compat, iterations.", type="floats")
    crf_image: str = option("deeplab_pytorch", "The CRF's image: deeplab-pytorch's wrapped mean-subtracted BGR "
                                               "image, or the RGB photo.", type="choice:" + "|".join(CRF_IMAGES))

    def __post_init__(self):
        if self.model is not None:
            check_family(self.model, FAMILY)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise UserError(f"--scales: every scale must be > 0, got {self.scales}")
        if self.fuse not in ("max", "mean") or self.crf_image not in CRF_IMAGES:
            raise UserError(f"fuse must be max or mean and crf_image one of {', '.join(CRF_IMAGES)}, got "
                            f"{self.fuse!r} and {self.crf_image!r}")
        p = tuple(self.crf_params)
        if len(p) != 6 or min(p) < 0 or p[5] != int(p[5]):
            raise UserError(f"--crf-params: expected 6 values >= 0 (Gaussian sxy, compat, bilateral sxy, srgb, "
                            f"compat, iterations as an integer), got {p}")


def crf_kwargs(params: Sequence[float]) -> dict:
    """``--crf-params`` as keyword arguments of :func:`wsss.ops.crf.dense_crf`."""
    names = ("gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
    return {**dict(zip(names, map(float, params[:5]))), "iterations": int(params[5])}


def deeplab_pytorch_crf_image(image: np.ndarray) -> np.ndarray:
    """deeplab-pytorch's CRF image: BGR minus the Caffe mean, truncated and wrapped modulo 256 (uint8 (H, W, 3))."""
    bgr = image[..., ::-1].astype(np.float64) - np.asarray(CAFFE_BGR_MEAN)
    return (np.trunc(bgr).astype(np.int64) % 256).astype(np.uint8)


def seg_inputs(image: np.ndarray, normalization, cfg: SegInferConfig) -> list[torch.Tensor]:
    """Per scale of ``cfg.scales`` (times ``short_side / min(H, W)`` with ``cfg.short_side``), the network input of
    :func:`~wsss.ops.multiscale.scaled_inputs` (the image, and its flip under ``cfg.flip``)."""
    h, w = image.shape[:2]
    base = cfg.short_side / min(h, w) if cfg.short_side else 1.0
    return scaled_inputs(image, normalization, [s * base for s in cfg.scales], cfg.flip)


def fuse_logits(network: torch.nn.Module, inputs, size: tuple[int, int], cfg: SegInferConfig) -> torch.Tensor:
    """The logits of the :func:`seg_inputs` at ``size`` (H, W), merged by ``cfg.fuse``: (C + 1, H, W) float32 on
    the network's device."""
    device = next(network.parameters()).device
    merged, count = None, 0
    for x in inputs:
        logits = network(x.to(device, non_blocking=True))["logits"].float()
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=cfg.align_corners)
        if cfg.flip:
            logits[1] = logits[1].flip(-1)
        for one in logits:
            merged = one if merged is None else torch.maximum(merged, one) if cfg.fuse == "max" else merged + one
            count += 1
    return merged if cfg.fuse == "max" else merged / count


@torch.inference_mode()
def merged_logits(network: torch.nn.Module, image: np.ndarray, normalization, cfg: SegInferConfig) -> torch.Tensor:
    """The inputs' logits at image size, merged by ``cfg.fuse``: (C + 1, H, W) float32 on the network's device.

    Args:
        network: a ``seg`` family network in eval mode (forward returns ``logits``).
        image: uint8 (H, W, 3) RGB.
        normalization: the network's input normalisation.
        cfg: scales, flip, fuse, short_side, align_corners.
    """
    return fuse_logits(network, seg_inputs(image, normalization, cfg), image.shape[:2], cfg)


def predict_labels(cfg: SegInferConfig, network, image: np.ndarray, inputs) -> np.ndarray:
    """(H, W) uint8 labels 0..C of one image from its :func:`seg_inputs` (see the module docstring)."""
    probs = torch.softmax(fuse_logits(network, inputs, image.shape[:2], cfg), dim=0).cpu().numpy()
    if cfg.crf:
        from wsss.ops.crf import dense_crf

        crf_image = deeplab_pytorch_crf_image(image) if cfg.crf_image == "deeplab_pytorch" else image
        probs = dense_crf(crf_image, probs, **crf_kwargs(cfg.crf_params))
    return probs.argmax(0).astype(np.uint8)


def original_model(path: Path) -> Optional[str]:
    """The network a flat (original authors') state dict is for, recognised from its keys; None for our
    checkpoints and for unknown files."""
    from wsss.models.weights import read_weights_file

    obj = read_weights_file(path)
    keys = obj.keys() if isinstance(obj, dict) else ()
    return next((model for key, model in ORIGINAL_KEYS.items() if key in keys), None)


def load_seg_network(cfg: SegInferConfig, num_classes: int) -> torch.nn.Module:
    """Our ``seg`` checkpoint, or an original state dict (network from ``cfg.model`` or its keys), loaded strictly."""
    from wsss.models.weights import load_network

    path = Path(cfg.weights)
    default = None if cfg.model is not None else original_model(path)
    network = load_network(path, model=cfg.model, default_model=default, family=FAMILY, backbone=cfg.backbone)
    if network.num_classes != num_classes:
        raise UserError(f"--weights {path}: a network of {network.num_classes} classes (with background), the "
                        f"dataset has {num_classes}")
    return network


class SegInfer(InferenceStage):
    """Multi-scale (+ flip, + CRF) labels of a retrained segmentation network, as a ``label`` artifact."""

    name, config, kind, model = "seg_infer", SegInferConfig, "label", FAMILY
    required = ("data", "weights", "out")

    def load_network(self, cfg, data):
        return load_seg_network(cfg, data.num_classes + 1)

    def load(self, ctx: Context, image_id: str) -> dict:
        """The image and its network inputs (:func:`seg_inputs`)."""
        image = ctx.data.read_image(image_id)
        return {"image": image, "inputs": seg_inputs(image, ctx.normalization, ctx.cfg)}

    def predict(self, ctx: Context, image_id: str, loaded: dict) -> np.ndarray:
        return predict_labels(ctx.cfg, ctx.network, loaded["image"], loaded["inputs"])

    def manifest_extra(self, ctx: Context) -> dict:
        cfg = ctx.cfg
        return {"classes": list(ctx.data.classes), "recipe": cfg.recipe, "scales": list(cfg.scales),
                "flip": cfg.flip, "crf": cfg.crf}


STAGE = SegInfer()
run = STAGE.run
