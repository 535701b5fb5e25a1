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

A network of the family layers its own settings over these (its ``recipes["single_train"]``, per backbone): WS-FCN
on wideresnet38 runs 31 epochs with a 7-epoch warm-up. The network options (``pamr_iterations``, ``focal_lambda``,
``pseudo_floor``, ``pseudo_bg_ratio``) are the network's defaults unless given (WS-FCN's COCO recipe changes them).

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

from wsss.config import option, resolve_layered
from wsss.engine.stage import TrainingStage, TrainStageConfig
from wsss.errors import UserError
from wsss.models.registry import check_family
from wsss.models.single_stage import SingleStageTrainModule

FAMILY = "single"  # the registry family whose networks this stage trains (--model choices)
# Per-backbone values of the reference configs (see the module docstring); anything else is the dataclass default.
TRAIN_RECIPES = {
    "wideresnet38": {"crop": 321, "epochs": 25, "lr": 1e-3},
    "resnet50": {"crop": 448, "epochs": 21, "lr": 5e-4},
    "resnet101": {"crop": 448, "epochs": 21, "lr": 1e-3},
    "vgg16": {"crop": 448, "epochs": 33, "lr": 1e-3},
    "tiny": {"crop": 96, "epochs": 30, "lr": 1e-4, "optimizer": "adam", "batch_size": 8, "warmup_epochs": 15},
}
BSL_EPOCHS = 7
# Network builder options (passed only when given): name -> (check, what the value must be). The command line checks
# them too; a --config file or a recipe does not.
NETWORK_OPTIONS = {
    "pamr_iterations": (lambda v: v >= 1, ">= 1"),
    "focal_lambda": (lambda v: v > 0, "> 0"),
    "pseudo_floor": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "pseudo_bg_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


@dataclasses.dataclass(frozen=True)
class SingleTrainConfig(TrainStageConfig):
    val_split: Optional[str] = option("val", "Split validated every val_every epochs (loss, mIoU of the masks).")
    model: str = option("single_stage", "Network of the single-stage family.", type=f"model:{FAMILY}")
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    psa_momentum_quirk: bool = False
    poly_power: float = 0.0
    batch_size: int = 16
    epochs: int = 25
    crop: int = option(321, "Training crop size in pixels.", type="count")
    crop_scale: tuple = (0.9, 1.0)
    warmup_epochs: int = 5
    mask_loss_weight: float = 1.0
    sync_bn: bool = False
    val_every: int = 2
    pamr_iterations: Optional[int] = option(None, "PAMR iterations (default: the network's, 10).", type="count")
    focal_lambda: Optional[float] = option(None, "Focal mask penalty's lambda (default: the network's, 0.01).",
                                           type="positive")
    pseudo_floor: Optional[float] = option(None, "Lowest pseudo ground-truth threshold (default: the network's, "
                                                 "0.2).", type="fraction")
    pseudo_bg_ratio: Optional[float] = option(None, "Background threshold as a fraction of its peak (default: the "
                                                    "network's, 0.7).", type="fraction")

    def __post_init__(self):
        super().__post_init__()
        check_family(self.model, FAMILY)
        if self.crop < 8:
            raise UserError(f"--crop must be >= 8, got {self.crop}")
        if self.warmup_epochs < 0 or self.mask_loss_weight < 0:
            raise UserError(f"warmup_epochs and mask_loss_weight must be >= 0, got {self.warmup_epochs} and "
                            f"{self.mask_loss_weight}")
        for name, (check, wanted) in NETWORK_OPTIONS.items():
            if getattr(self, name) is not None and not check(getattr(self, name)):
                raise UserError(f"{name} must be {wanted}, got {getattr(self, name)}")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise UserError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")

    def transform_recipe(self):
        """1-stage-wseg: random resized crop (area ``crop_scale``), flip, colour jitter."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig.single_stage(self.crop, self.crop_scale)


def recipe_for(model: str, backbone: str) -> dict:
    """The reference settings of ``model`` on ``backbone``: the backbone's, then the network's own (its
    ``recipes["single_train"]``); an unknown backbone gets only the network's."""
    from wsss.models.registry import model_entry

    recipe = dict(TRAIN_RECIPES.get(backbone, {}))
    if model == "bsl" and backbone != "tiny":
        recipe["epochs"] = BSL_EPOCHS
    return {**recipe, **model_entry(model).builder.stage_recipe(SingleTrain.name, backbone)}


def resolve_config(config_file: Optional[Path] = None, flags: Optional[Mapping] = None,
                   recipe: Optional[Mapping] = None) -> SingleTrainConfig:
    """default < per-backbone recipe < ``recipe`` < ``--config`` file < flags (the backbone may come from any)."""
    return resolve_layered(SingleTrainConfig, lambda first: recipe_for(first.model, first.backbone), recipe=recipe,
                           config_file=config_file, flags=flags)


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


class SingleTrain(TrainingStage):
    """The single-stage family (``--model``): its train module, 1-stage-wseg's validation."""

    name, config = "single_train", SingleTrainConfig
    resolve_config = staticmethod(resolve_config)

    def network_name(self, cfg) -> str:
        return cfg.model

    def network_kwargs(self, cfg, data) -> dict:
        options = {k: getattr(cfg, k) for k in NETWORK_OPTIONS if getattr(cfg, k) is not None}
        return {"backbone": cfg.backbone, "num_classes": data.num_classes + 1, **options}

    def train_module(self, network, cfg) -> SingleStageTrainModule:
        return SingleStageTrainModule(network, warmup_epochs=cfg.warmup_epochs, mask_loss_weight=cfg.mask_loss_weight)

    def check_inputs(self, cfg, data) -> None:
        data.ids(cfg.split)  # unknown split -> UserError before anything is written
        if cfg.val_split:
            missing = [i for i in data.ids(cfg.val_split) if not data.has_mask(i)]
            if missing:
                raise UserError(f"--val-split {cfg.val_split}: {len(missing)} ids have no ground-truth mask "
                                f"(first: {missing[0]})")

    def validator(self, cfg, data, module):
        if not cfg.val_split:
            return None
        return mask_validator(data, cfg.val_split, module.network.normalization, module)


STAGE = SingleTrain()
run = STAGE.run
