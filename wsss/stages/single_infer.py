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

from wsss.artifacts import Manifest, input_record
from wsss.config import identity, runtime
from wsss.engine.distributed import init_distributed, open_output
from wsss.engine.inference import each, write_items
from wsss.errors import UserError
from wsss.ops.multiscale import scaled_images
from wsss.runtime import setup

MODELS = ("single_stage", "bsl")
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
class SingleInferConfig:
    data: Optional[Path] = None
    split: str = "val"
    weights: Optional[Path] = None
    out: Optional[Path] = None
    model: Optional[str] = None
    backbone: Optional[str] = None
    scales: Optional[tuple] = None
    flip: bool = True
    pad_size: Optional[int] = None
    fp_cut: Optional[float] = None
    bg_pow: Optional[float] = None
    clean: Optional[bool] = None
    crf: bool = False
    device: str = runtime("auto")
    workers: int = runtime(0)
    seed: int = runtime(0)
    overwrite: bool = runtime(False)

    def __post_init__(self):
        if self.model is not None and self.model not in MODELS:
            raise UserError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.scales is not None and (not self.scales or any(s <= 0 for s in self.scales)):
            raise UserError(f"--scales: every scale must be > 0, got {self.scales}")
        if self.pad_size is not None and self.pad_size < 1:
            raise UserError(f"--pad-size must be >= 1, got {self.pad_size}")
        if self.fp_cut is not None and not 0 <= self.fp_cut <= 1:
            raise UserError(f"--fp-cut must lie in [0, 1], got {self.fp_cut}")
        if self.bg_pow is not None and not self.bg_pow > 0:
            raise UserError(f"--bg-pow must be > 0, got {self.bg_pow}")

    def with_recipe(self, backbone: str) -> "SingleInferConfig":
        """Every None setting filled from the backbone's reference values (wideresnet38's for other names)."""
        recipe = INFER_RECIPES.get(backbone, _R38)
        return dataclasses.replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})


def centre_pad(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int, int]:
    """Pad (B, C, h, w) with zeros to (B, C, size, size), centred (left/top get the floor). Returns (x, top, left)."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise UserError(f"--pad-size {size}: a scaled input is {w}x{h}; use a pad size of at least {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, [left, size - w - left, top, size - h - top]), top, left


@torch.no_grad()
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
    device = next(network.parameters()).device
    h, w = image.shape[:2]
    total, probs, count = None, None, 0
    for scaled in scaled_images(image, scales):
        sh, sw = scaled.shape[:2]
        x = torch.as_tensor(normalization.apply(scaled))[None].float()
        x = torch.cat([x, x.flip(-1)]) if flip else x
        padded, top, left = centre_pad(x, pad_size)
        out = network(padded.to(device))
        masks = out["masks"][:, :, top:top + sh, left:left + sw].float()
        masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        if flip:
            masks[1] = masks[1].flip(-1)
        total = masks.sum(0) if total is None else total + masks.sum(0)
        batch_probs = torch.sigmoid(out["scores"].float()).amax(0)
        probs = batch_probs if probs is None else torch.maximum(probs, batch_probs)
        count += masks.shape[0]
    return (total / count).cpu(), probs.cpu()


def merge_masks(masks: torch.Tensor, labels: torch.Tensor, bg_pow: float) -> torch.Tensor:
    """Foreground channels times the 0/1 ``labels`` (C,), background to the power ``bg_pow``: (C + 1, H, W)."""
    if masks.ndim != 3 or labels.shape != (masks.shape[0] - 1,):
        raise ValueError(f"expected masks (C + 1, H, W) and labels (C,), got {tuple(masks.shape)} and "
                         f"{tuple(labels.shape)}")
    keep = torch.cat([torch.ones(1), labels.float().cpu()]).to(masks)
    merged = masks * keep[:, None, None]
    merged[0] = merged[0].pow(bg_pow)
    return merged


def image_labels(cfg: SingleInferConfig, data, image_id: str, probs: torch.Tensor) -> torch.Tensor:
    """(C,) 0/1: the ground-truth image label with ``clean``, else the predicted probabilities above ``fp_cut``."""
    if cfg.clean:
        if not data.has_labels(image_id):
            raise UserError(f"--clean: image {image_id} of split {cfg.split} has no ground-truth image label")
        return torch.from_numpy(data.label_vector(image_id))
    return (probs > cfg.fp_cut).float()


def predict_labels(cfg: SingleInferConfig, network, data, image_id: str, normalization) -> np.ndarray:
    """(H, W) uint8 label map of one image: 0 background, 1..C classes."""
    image = data.read_image(image_id)
    masks, probs = multiscale_masks(network, image, normalization, cfg.scales, cfg.flip, cfg.pad_size)
    merged = merge_masks(masks, image_labels(cfg, data, image_id, probs), cfg.bg_pow)
    if cfg.crf:
        from wsss.ops.crf import dense_crf

        return dense_crf(image, merged.numpy()).argmax(0).astype(np.uint8)
    return merged.argmax(0).numpy().astype(np.uint8)


def _peek(path: Path):
    """The weights file's content, memory-mapped when the format allows it (then nearly free)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (pre-zip) files cannot be mapped; read_weights_file reports the rest
        from wsss.models.weights import read_weights_file

        return read_weights_file(path)


def load_single_network(cfg: SingleInferConfig, num_classes: int) -> torch.nn.Module:
    """Our checkpoint of ``single_stage``/``bsl``, or a 1-stage-wseg state dict, loaded strictly, eval mode.

    For an original file the network (``ae`` -> single_stage, ``bsl``) is read from its keys unless ``cfg.model``
    says, and the backbone and class count too unless ``cfg.backbone`` says.
    """
    from wsss.models.single_stage_reference import MODEL_NAMES, reference_model_type
    from wsss.models.weights import CHECKPOINT_KEYS, load_network

    path = Path(cfg.weights)
    obj = _peek(path)
    if isinstance(obj, dict) and all(k in obj for k in CHECKPOINT_KEYS):
        if obj["model"] not in MODELS:
            raise UserError(f"--weights {path}: a checkpoint of model {obj['model']!r}, expected one of "
                            f"{', '.join(MODELS)}")
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


def run(cfg: SingleInferConfig) -> Manifest:
    """Write ``{id}.png`` for every id of the split into ``cfg.out``; returns its ``label`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.data.palette import write_label_png
    from wsss.models.normalization import normalization_for

    if cfg.data is None or cfg.out is None or cfg.weights is None:
        raise UserError("--data, --weights and --out are required")
    if not Path(cfg.weights).is_file():
        raise UserError(f"--weights {cfg.weights}: file not found")
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    device = setup(cfg.seed, cfg.device)
    dist = init_distributed(device)
    network = load_single_network(cfg, data.num_classes + 1).to(device)
    cfg = cfg.with_recipe(network.backbone_name)
    norm = normalization_for(network.backbone_name)
    inputs = {"data": input_record(cfg.data), "weights": input_record(cfg.weights)}
    out = open_output(cfg.out, dist, kind="label", stage="single_infer", config=identity(cfg), inputs=inputs,
                      overwrite=bool(cfg.overwrite))

    def item(image_id: str):
        labels = predict_labels(cfg, network, data, image_id, norm)
        return lambda path: write_label_png(path, labels, data.palette)

    return write_items(out, ids, dist, lambda todo: each(todo, item), split=cfg.split,
                       extra={"classes": list(data.classes),
                              "labels_from": "ground truth" if cfg.clean else f"scores > {cfg.fp_cut}"})
