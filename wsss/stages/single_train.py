"""``wsss single train``: the single-stage network (or its ``bsl`` baseline) trained on image-level labels.

Defaults are 1-stage-wseg's recipes (``configs/voc_*.yaml`` and the launch scripts), per backbone:

==============  =====  =========================  ========  ==========================================
backbone        crop   epochs (as actually run)   lr        notes
==============  =====  =========================  ========  ==========================================
wideresnet38    321    25 (NUM_EPOCHS 24, incl.)  1e-3      released model: the best checkpoint, e020
resnet50        448    21                         5e-4      output stride 16, no dilation
resnet101       448    21                         1e-3
vgg16           448    33                         1e-3      only conv1_x frozen
tiny            96     30                         1e-4      toy-data recipe (ours): Adam, batch 8, warm-up 15
==============  =====  =========================  ========  ==========================================

Common: train_aug, batch 16, SGD momentum 0.9 (no PSA quirk), weight decay 5e-4 (weights only), **constant**
learning rate (poly power 0), the (1, 2, 10, 20) multipliers ((1, 1, 10, 10) for the ResNets), random resized crop
of area 0.9..1 + flip + colour jitter, multi-label soft-margin loss, and from epoch 5 on the self-supervised
segmentation loss at weight 1. The reference loop runs ``NUM_EPOCHS + 1`` epochs, hence 25/21/33; ``bsl`` runs
7 (``NUM_EPOCHS 6``). Batch norm statistics are per process, as the reference's DataParallel (``sync_bn`` off).

Validation (every 2 epochs, as the reference, on unaugmented full images of ``val_split``, one at a time, eval
mode, ground-truth image labels): ``loss`` = classification + segmentation loss, ``miou`` of the argmax of the
label-cleaned masks, and from the end of the warm-up on ``score = 1 - loss``, the reference's checkpoint score, so
the best checkpoint is ``best_e{epoch}_s{score}.pt``. Departure: the reference validated on randomly augmented
crops.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.artifacts import Manifest, input_record
from wsss.config import resolve
from wsss.engine import TrainConfig, fit
from wsss.errors import UserError
from wsss.models.single_stage import SingleStageTrainModule

MODELS = ("single_stage", "bsl")
# Per-backbone values of the reference configs (see the module docstring); anything else is the dataclass default.
TRAIN_RECIPES = {
    "wideresnet38": {"crop": 321, "epochs": 25, "lr": 1e-3},
    "resnet50": {"crop": 448, "epochs": 21, "lr": 5e-4},
    "resnet101": {"crop": 448, "epochs": 21, "lr": 1e-3},
    "vgg16": {"crop": 448, "epochs": 33, "lr": 1e-3},
    "tiny": {"crop": 96, "epochs": 30, "lr": 1e-4, "optimizer": "adam", "batch_size": 8, "warmup_epochs": 15},
}
BSL_EPOCHS = 7


@dataclasses.dataclass(frozen=True)
class SingleTrainConfig(TrainConfig):
    data: Optional[Path] = None
    split: str = "train_aug"
    val_split: Optional[str] = "val"
    model: str = "single_stage"
    backbone: str = "wideresnet38"
    init_weights: Optional[Path] = None
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    psa_momentum_quirk: bool = False
    poly_power: float = 0.0
    batch_size: int = 16
    epochs: int = 25
    crop: int = 321
    crop_scale: tuple = (0.9, 1.0)
    warmup_epochs: int = 5
    mask_loss_weight: float = 1.0
    sync_bn: bool = False
    val_every: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.model not in MODELS:
            raise UserError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.crop < 8:
            raise UserError(f"--crop must be >= 8, got {self.crop}")
        if self.warmup_epochs < 0 or self.mask_loss_weight < 0:
            raise UserError(f"warmup_epochs and mask_loss_weight must be >= 0, got {self.warmup_epochs} and "
                            f"{self.mask_loss_weight}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise UserError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")


def recipe_for(model: str, backbone: str) -> dict:
    """The reference settings of ``model`` on ``backbone`` (an unknown backbone gets none)."""
    recipe = dict(TRAIN_RECIPES.get(backbone, {}))
    if model == "bsl" and backbone != "tiny":
        recipe["epochs"] = BSL_EPOCHS
    return recipe


def resolve_config(config_file: Optional[Path] = None, flags: Optional[Mapping] = None,
                   recipe: Optional[Mapping] = None) -> SingleTrainConfig:
    """default < per-backbone recipe < ``recipe`` < ``--config`` file < flags (the backbone may come from any)."""
    first = resolve(SingleTrainConfig, recipe=recipe, config_file=config_file, flags=flags)
    layered = {**recipe_for(first.model, first.backbone), **(recipe or {})}
    return resolve(SingleTrainConfig, recipe=layered, config_file=config_file, flags=flags)


def mask_validator(data, split: str, normalization, module: SingleStageTrainModule):
    """``network -> {"loss", "loss_cls", "miou"[, "score"]}`` over a split of full images, one at a time.

    ``module`` is the train module (its epoch decides whether the warm-up is over and its loss weight applies).
    """
    from wsss.ops.confusion import ConfusionMatrix

    ids = data.ids(split)

    def validate(network: nn.Module) -> dict:
        device = next(network.parameters()).device
        confusion = ConfusionMatrix(data.num_classes + 1)
        losses, cls_losses = [], []
        for image_id in ids:
            image = torch.as_tensor(normalization.apply(data.read_image(image_id)))[None].to(device)
            label = torch.from_numpy(data.label_vector(image_id))[None].to(device)
            out = network(image, labels=label)
            loss_cls = F.multilabel_soft_margin_loss(out["scores"].float(), label)
            loss = loss_cls + module.mask_loss_weight * out["mask_loss"].mean() if "mask_loss" in out else loss_cls
            losses.append(float(loss))
            cls_losses.append(float(loss_cls))
            confusion.update(data.read_mask(image_id), out["masks"][0].argmax(0).cpu().numpy().astype(np.uint8))
        metrics = {"loss": float(np.mean(losses)), "loss_cls": float(np.mean(cls_losses)),
                   "miou": float(confusion.compute()["miou"])}
        if module.mask_loss_active:
            metrics["score"] = 1.0 - metrics["loss"]
        return metrics

    return validate


def _check_inputs(cfg: SingleTrainConfig, data) -> None:
    data.ids(cfg.split)  # unknown split -> UserError before anything is written
    if cfg.val_split:
        missing = [i for i in data.ids(cfg.val_split) if not data.has_mask(i)]
        if missing:
            raise UserError(f"--val-split {cfg.val_split}: {len(missing)} ids have no ground-truth mask "
                            f"(first: {missing[0]})")
    if cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
        raise UserError(f"--init-weights {cfg.init_weights}: file not found")


def run(cfg: SingleTrainConfig) -> Manifest:
    """Train into ``cfg.out``; returns the run's ``checkpoint`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.data.datasets import ClassificationDataset
    from wsss.data.transforms import JointTransform, JointTransformConfig
    from wsss.models.normalization import normalization_for
    from wsss.models.registry import build_model

    if cfg.data is None:
        raise UserError("--data is required")
    data = open_dataset(cfg.data)
    _check_inputs(cfg, data)
    norm = normalization_for(cfg.backbone)
    model_kwargs = {"backbone": cfg.backbone, "num_classes": data.num_classes + 1}
    validators: dict = {}

    def build():
        network = build_model(cfg.model, **model_kwargs)
        if cfg.init_weights is not None:
            from wsss.models.weights import load_backbone_init

            load_backbone_init(network.backbone, cfg.init_weights)
        module = SingleStageTrainModule(network, warmup_epochs=cfg.warmup_epochs,
                                        mask_loss_weight=cfg.mask_loss_weight)
        if cfg.val_split:
            validators["val"] = mask_validator(data, cfg.val_split, norm, module)
        transform = JointTransform(JointTransformConfig.single_stage(cfg.crop, cfg.crop_scale), norm)
        return module, ClassificationDataset(data, cfg.split, transform=transform)

    def validate(network: nn.Module) -> dict:
        return validators["val"](network)

    inputs = {"data": input_record(cfg.data)}
    if cfg.init_weights is not None:
        inputs["init_weights"] = {"path": str(Path(cfg.init_weights).resolve())}
    return fit(cfg, stage="single_train", build=build, model_name=cfg.model, model_kwargs=model_kwargs,
               split=cfg.split, inputs=inputs, validate=validate if cfg.val_split else None)
