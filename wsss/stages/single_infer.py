"""``wsss single infer``: segmentation masks of a trained single-stage network (or ``bsl``), as a ``label`` artifact.

The reference's multi-scale inference (``infer_val.py``, ``MultiscaleLoader``, ``MergeMultiScale``): each scale
``s`` resizes the image to ``round(W s) x round(H s)`` (bicubic), with its horizontal flip; each input is
normalised and centre-padded to ``pad_size`` (left/top get the floor of half the margin; the padding is 0 after
normalisation). The test-mode masks at the padded size are cropped back to the scaled image, resized bilinearly
(align_corners=False) to the image size and un-flipped; their arithmetic **mean** is taken, the foreground channels
multiplied by the 0/1 image labels and the background channel raised to the power ``bg_pow``; the label is the
argmax. Image labels: ``max over inputs of sigmoid(score) > fp_cut`` by default, the ground-truth image labels with
``clean`` (the paper's "-clean" masks). ``crf`` post-processes the merged masks with the reference dense CRF.

Per-backbone defaults (reference YAMLs; a value left as None takes them):

============  ===================  ========  ======  ======  =====
backbone      scales               pad_size  fp_cut  bg_pow  clean
============  ===================  ========  ======  ======  =====
wideresnet38  1, 0.5, 1.5, 2       1024      0.1     3       no
resnet50/101  1, 0.75, 1.25, 1.5   768       0.3     3       yes
vgg16         1, 0.75, 1.25, 1.5   768       0.3     1       yes
tiny          1, 0.5, 1.5, 2       256       0.1     3       no (toy data)
============  ===================  ========  ======  ======  =====

A network of the family layers its own settings over these (its ``recipes["single_infer"]``): WS-FCN sets the
background to the constant ``bg_const`` 0.25 (``bg_pow`` unused) and, with ``crf``, feeds the CRF
``[(1 - max fg) ** crf_bg_alpha, fg]`` (alpha 5) with a bilateral width ``crf_bilateral_sxy`` of 30 instead of the
merged masks with 80.

Weights: our checkpoints, or the authors' flat state dicts such as ``model_enc_e020Xs0.928.pth`` (model, backbone
and class count read from the keys). Ids are split across ranks under ``torchrun``; a rerun continues a killed run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.config import option
from wsss.engine.inference import Context, InferenceStage, NetworkInferConfig
from wsss.errors import UserError
from wsss.models.registry import check_family
from wsss.ops.multiscale import scaled_inputs
from wsss.stages.single_train import FAMILY

_R38 = {"scales": (1.0, 0.5, 1.5, 2.0), "pad_size": 1024, "fp_cut": 0.1, "bg_pow": 3.0, "clean": False}
_RESNET = {"scales": (1.0, 0.75, 1.25, 1.5), "pad_size": 768, "fp_cut": 0.3, "bg_pow": 3.0, "clean": True}
INFER_RECIPES = {
    "wideresnet38": _R38,
    "resnet50": _RESNET,
    "resnet101": _RESNET,
    "vgg16": {**_RESNET, "bg_pow": 1.0},
    "tiny": {**_R38, "pad_size": 256},
}


@dataclasses.dataclass(frozen=True)
class SingleInferConfig(NetworkInferConfig):
    split: str = "val"
    model: Optional[str] = option(None, "Network of an original (non-wsss) weights file.", type=f"model:{FAMILY}")
    scales: Optional[tuple] = option(None, "Comma-separated scales (default: the backbone's recipe).", type="floats")
    flip: bool = option(True, "Add the flipped image at every scale (--no-flip: do not).")
    pad_size: Optional[int] = option(None, "Side every scaled input is centre-padded to.", type="count")
    fp_cut: Optional[float] = option(None, "Class probability above which a class is in the image label (without "
                                           "--clean).", type="fraction")
    bg_pow: Optional[float] = option(None, "Power applied to the merged background probability.", type="positive")
    clean: Optional[bool] = option(None, "Use the ground-truth image labels (\"-clean\" masks).")
    crf: bool = option(False, "Dense-CRF post-processing with the reference parameters.", type="flag")
    bg_const: Optional[float] = option(None, "Constant background probability instead of --bg-pow (default: the "
                                             "network's recipe; WS-FCN 0.25).", type="fraction")
    crf_bg_alpha: Optional[float] = option(None, "CRF input [(1 - max fg) ** alpha, fg] instead of the merged masks "
                                                 "(default: the network's recipe; WS-FCN 5).", type="positive")
    crf_bilateral_sxy: Optional[float] = option(None, "CRF bilateral kernel width in pixels (default: the network's "
                                                      "recipe; 80, WS-FCN 30).", type="positive")

    def __post_init__(self):
        if self.model is not None:
            check_family(self.model, FAMILY)
        if self.scales is not None and (not self.scales or any(s <= 0 for s in self.scales)):
            raise UserError(f"--scales: every scale must be > 0, got {self.scales}")
        if self.pad_size is not None and self.pad_size < 1:
            raise UserError(f"--pad-size must be >= 1, got {self.pad_size}")
        if self.fp_cut is not None and not 0 <= self.fp_cut <= 1:
            raise UserError(f"--fp-cut must lie in [0, 1], got {self.fp_cut}")
        for name in ("bg_pow", "crf_bg_alpha", "crf_bilateral_sxy"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.bg_const is not None and not 0 <= self.bg_const <= 1:
            raise UserError(f"--bg-const must lie in [0, 1], got {self.bg_const}")

    def with_recipe(self, backbone: str, network_recipe: Optional[dict] = None) -> "SingleInferConfig":
        """Every None setting filled from the network's own recipe (``network_recipe``), then the backbone's
        reference values (wideresnet38's for other names)."""
        recipe = {**INFER_RECIPES.get(backbone, _R38), **(network_recipe or {})}
        return dataclasses.replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})


def centre_pad(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """Pad (B, C, h, w) with zeros to (B, C, size, size), centred (left/top get the floor). Returns (x, top, left)."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise UserError(f"--pad-size {size}: a scaled input is {w}x{h}; use a pad size of at least {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, [left, size - w - left, top, size - h - top]), top, left


def padded_inputs(image: np.ndarray, normalization, scales: Sequence[float], flip: bool,
                  pad_size: int) -> list[tuple[torch.Tensor, tuple[int, int, int, int]]]:
    """Per scale, the network input (:func:`~wsss.ops.multiscale.scaled_inputs`) centre-padded to ``pad_size``,
    (1 or 2, 3, pad_size, pad_size), and the window ``(top, left, h_s, w_s)`` of the scaled image in it."""
    out = []
    for x in scaled_inputs(image, normalization, scales, flip):
        padded, top, left = centre_pad(x, pad_size)
        out.append((padded, (top, left, *x.shape[-2:])))
    return out


def padded_masks(network: torch.nn.Module, inputs, size: tuple[int, int],
                 flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean test-mode masks over the :func:`padded_inputs` of an image of ``size`` (H, W), and the largest class
    probability: masks (K, H, W) float32 on the CPU (not label-cleaned), probabilities (C,) (the maximum over
    inputs of sigmoid(scores))."""
    device = next(network.parameters()).device
    total, probs, count = None, None, 0
    for padded, (top, left, sh, sw) in inputs:
        out = network(padded.to(device, non_blocking=True))
        masks = out["masks"][:, :, top:top + sh, left:left + sw].float()
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        if flip:
            masks[1] = masks[1].flip(-1)
        total = masks.sum(0) if total is None else total + masks.sum(0)
        batch_probs = torch.sigmoid(out["scores"].float()).amax(0)
        probs = batch_probs if probs is None else torch.maximum(probs, batch_probs)
        count += masks.shape[0]
    return (total / count).cpu(), probs.cpu()


@torch.inference_mode()
def multiscale_masks(network: torch.nn.Module, image: np.ndarray, normalization, scales: Sequence[float],
                     flip: bool, pad_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean test-mode masks over scales and flips, and the largest class probability.

    Args:
        network: a ``single_stage`` or ``bsl`` network in eval mode.
        image: uint8 (H, W, 3) RGB.
        normalization: the backbone's input normalisation.
        scales, flip, pad_size: the inputs (see the module docstring).

    Returns:
        masks (K, H, W) float32 on the CPU (mean over inputs, not label-cleaned) and probabilities (C,): the
        maximum over inputs of sigmoid(scores).
    """
    inputs = padded_inputs(image, normalization, scales, flip, pad_size)
    return padded_masks(network, inputs, image.shape[:2], flip)


def merge_masks(masks: torch.Tensor, labels: torch.Tensor, bg_pow: float,
                bg_const: Optional[float] = None) -> torch.Tensor:
    """Foreground channels times the 0/1 ``labels`` (C,), background to the power ``bg_pow``, or the constant
    ``bg_const`` when given: (C + 1, H, W)."""
    if masks.ndim != 3 or labels.shape != (masks.shape[0] - 1,):
        raise ValueError(f"expected masks (C + 1, H, W) and labels (C,), got {tuple(masks.shape)} and "
                         f"{tuple(labels.shape)}")
    keep = torch.cat([torch.ones(1), labels.float().cpu()]).to(masks)
    merged = masks * keep[:, None, None]
    merged[0] = merged[0].pow(bg_pow) if bg_const is None else bg_const
    return merged


def image_labels(cfg: SingleInferConfig, data, image_id: str, probs: torch.Tensor) -> torch.Tensor:
    """(C,) 0/1: the ground-truth image label with ``clean``, else the predicted probabilities above ``fp_cut``."""
    if cfg.clean:
        if not data.has_labels(image_id):
            raise UserError(f"--clean: image {image_id} of split {cfg.split} has no ground-truth image label")
        return torch.from_numpy(data.label_vector(image_id))
    return (probs > cfg.fp_cut).float()


def predict_labels(cfg: SingleInferConfig, network, data, image_id: str, loaded: dict) -> np.ndarray:
    """(H, W) uint8 label map of one image (``loaded``: :meth:`SingleInfer.load`'s): 0 background, 1..C classes."""
    image = loaded["image"]
    masks, probs = padded_masks(network, loaded["inputs"], image.shape[:2], cfg.flip)
    merged = merge_masks(masks, image_labels(cfg, data, image_id, probs), cfg.bg_pow, cfg.bg_const)
    if cfg.crf:
        return crf_label_map(cfg, image, merged.numpy())
    return merged.argmax(0).numpy().astype(np.uint8)


def crf_label_map(cfg: SingleInferConfig, image: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """The dense CRF's argmax (H, W) uint8 over ``merged`` (C + 1, H, W), or over ``[(1 - max fg) ** crf_bg_alpha,
    fg]`` when ``crf_bg_alpha`` is set; ``crf_bilateral_sxy`` when set, else the reference CRF's 80."""
    from wsss.ops.crf import alpha_background_scores, dense_crf

    scores = merged if cfg.crf_bg_alpha is None else alpha_background_scores(merged[1:], cfg.crf_bg_alpha)
    kwargs = {} if cfg.crf_bilateral_sxy is None else {"bilateral_sxy": cfg.crf_bilateral_sxy}
    return dense_crf(image, scores, **kwargs).argmax(0).astype(np.uint8)


def _peek(path: Path):
    """The weights file's content, memory-mapped when the format allows it (then nearly free)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (pre-zip) files cannot be mapped; read_weights_file reports the rest
        from wsss.models.weights import read_weights_file

        return read_weights_file(path)


def load_single_network(cfg: SingleInferConfig, num_classes: int) -> torch.nn.Module:
    """Our checkpoint of a single-stage family network, or a 1-stage-wseg state dict, loaded strictly, eval mode.

    For an original file the network (``ae`` -> single_stage, ``bsl``) is read from its keys unless ``cfg.model``
    says, and the backbone and class count too unless ``cfg.backbone`` says.
    """
    from wsss.models.registry import list_models
    from wsss.models.single_stage_reference import MODEL_NAMES, reference_model_type
    from wsss.models.weights import CHECKPOINT_KEYS, load_network

    path = Path(cfg.weights)
    obj = _peek(path)
    if isinstance(obj, dict) and all(k in obj for k in CHECKPOINT_KEYS):
        models = list_models(kind="network", family=FAMILY)
        if obj["model"] not in models:
            raise UserError(f"--weights {path}: a checkpoint of model {obj['model']!r}, expected one of "
                            f"{', '.join(models)}")
        network = load_network(path, model=cfg.model)
    else:
        kind = reference_model_type(obj) if isinstance(obj, dict) else None
        if kind is None:
            raise UserError(f"--weights {path}: neither a wsss checkpoint nor a 1-stage-wseg state dict")
        del obj
        network = load_network(path, model=cfg.model or MODEL_NAMES[kind],
                               **({"backbone": cfg.backbone} if cfg.backbone else {}))
    if network.num_classes != num_classes:
        raise UserError(f"--weights {path}: a network of {network.num_classes} classes (with background), the "
                        f"dataset has {num_classes}")
    return network.eval()


class SingleInfer(InferenceStage):
    """1-stage-wseg's multi-scale inference of a single-stage family network, as a ``label`` artifact."""

    name, config, kind, model = "single_infer", SingleInferConfig, "label", FAMILY
    required = ("data", "weights", "out")

    def load_network(self, cfg, data):
        return load_single_network(cfg, data.num_classes + 1)

    def settle(self, cfg, network):
        return cfg.with_recipe(network.backbone_name, network.stage_recipe(self.name, network.backbone_name))

    def load(self, ctx: Context, image_id: str) -> dict:
        """The image and its padded network inputs (:func:`padded_inputs`)."""
        image, cfg = ctx.data.read_image(image_id), ctx.cfg
        return {"image": image, "inputs": padded_inputs(image, ctx.normalization, cfg.scales, cfg.flip, cfg.pad_size)}

    def predict(self, ctx: Context, image_id: str, loaded: dict) -> np.ndarray:
        return predict_labels(ctx.cfg, ctx.network, ctx.data, image_id, loaded)

    def manifest_extra(self, ctx: Context) -> dict:
        cfg = ctx.cfg
        return {"classes": list(ctx.data.classes),
                "labels_from": "ground truth" if cfg.clean else f"scores > {cfg.fp_cut}"}


STAGE = SingleInfer()
run = STAGE.run
