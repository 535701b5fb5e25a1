"""``wsss cam train``: the PSA classifier (CAM head on any zoo backbone), trained on image-level labels.

Defaults are PSA's published recipe (``train_cls.py``): train_aug, batch 16, 15 epochs, lr 0.1 with the
1x/2x/10x/20x group multipliers and poly decay (power 0.9), weight decay 5e-4, random long side in [256, 512],
flip, colour jitter (0.3, 0.3, 0.3, 0.1), normalise then crop 448 (so padding is the mean colour), multilabel
soft-margin loss, frozen batch norm and early blocks. PSA's SGD runs with momentum = weight decay (a bug the
published numbers depend on); ``psa_momentum_quirk: false`` gives ordinary momentum 0.9.

``--model`` picks the network of the registry's ``cam`` family, and ``--recipe`` a named preset of the defaults:
``irn`` is IRN's ``train_cam`` (irn.md §2.3): network ``irn_cam`` on ``resnet50`` (its head, frozen layers, fixed
BN statistics and two learning-rate groups come with the network), batch 16, 5 epochs, lr 0.1, weight decay 1e-4,
poly 0.9, the momentum quirk (IRN's PolyOptimizer has PSA's bug), long side 320-640, flip, no colour jitter,
crop 512.

:class:`ClassifierTrainConfig` and :class:`CamTrain` are the base of every classifier trained on image labels
(SEAM's is one): a subclass changes the recipe defaults, the network and the loss.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import Preset, option, preset_option
from wsss.models.train_module import TrainModule
from wsss.engine.stage import TrainingStage, TrainStageConfig
from wsss.ops.classification import mean_average_precision


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig(TrainStageConfig):
    """A classifier on image labels with PSA's augmentation (random long side, flip, jitter, crop)."""

    val_split: Optional[str] = option("val", "Split validated after each epoch (classification mAP).")
    lr: float = 0.1
    weight_decay: float = 5e-4
    psa_momentum_quirk: bool = True
    batch_size: int = 16
    epochs: int = 15
    crop: int = option(448, "Training crop size in pixels.", type="count")
    resize_long: tuple[int, ...] = (256, 512)
    jitter: tuple[float, ...] = (0.3, 0.3, 0.3, 0.1)

    def transform_recipe(self):
        """PSA train_cls: random long side, flip, colour jitter, normalise, then crop with zero padding."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig(long_side_range=tuple(self.resize_long), flip=True, jitter=tuple(self.jitter),
                                    crop=self.crop)


# --recipe presets (irn.md §2.3 for IRN); IRN's "no colour jitter" is zero jitter, which is the identity.
CAM_PRESETS = {
    "psa": Preset({}, "PSA's train_cls (the defaults)"),
    "irn": Preset({"model": "irn_cam", "backbone": "resnet50", "batch_size": 16, "epochs": 5, "lr": 0.1,
                   "weight_decay": 1e-4, "poly_power": 0.9, "psa_momentum_quirk": True, "resize_long": (320, 640),
                   "jitter": (0.0, 0.0, 0.0, 0.0), "crop": 512},
                  "IRN's train_cam: irn_cam on resnet50, batch 16, 5 epochs, lr 0.1, wd 1e-4, long side 320-640, "
                  "crop 512, no jitter",
                  ("validation: classification mAP and loss on full val images, where IRN prints the loss on "
                   "top-left 512 crops",)),
}


@dataclasses.dataclass(frozen=True)
class CamTrainConfig(ClassifierTrainConfig):
    """PSA's classifier: the defaults of :class:`ClassifierTrainConfig` are its recipe."""

    PRESETS: ClassVar[dict] = CAM_PRESETS

    recipe: str = preset_option(CAM_PRESETS, "psa", "Published recipe (its values sit under --config and the "
                                                     "flags):")
    model: str = option("cam", "Network of the cam family (cam: PSA's classifier, irn_cam: IRN's).", type="model:cam")


class CamTrainModule(TrainModule):
    """Classifier + multilabel soft-margin loss; the loss the engine minimises."""

    def forward(self, batch: dict) -> dict:
        logits = self.network(batch["image"])["logits"]
        return {"loss": F.multilabel_soft_margin_loss(logits, batch["label"])}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict:
        """The first image's CAM of its first present class, as a heat map next to the input (TensorBoard)."""
        cams = torch.relu(self.network(batch["image"][:1])["cams"][0])
        present = batch["label"][0].nonzero().flatten()
        if len(present) == 0:
            return {}
        return {"cam": heat_map(cams[present[0]], batch["image"].shape[-2:])}


def heat_map(cam: torch.Tensor, size) -> torch.Tensor:
    """One class map (h, w) >= 0 upsampled to ``size`` and max-normalised, as a (3, H, W) red-blue image in [0, 1]."""
    cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    cam = cam / (cam.max() + 1e-5)
    return torch.stack([cam, torch.zeros_like(cam), 1 - cam]).clamp(0, 1)


def classification_validator(data, split: str, normalization):
    """Returns ``network -> {"mAP", "loss", "score"}`` over a split (images at full size, one at a time)."""
    from wsss.data.torch_datasets import ClassificationDataset
    from wsss.data.transforms import JointTransform

    dataset = ClassificationDataset(data, split, transform=JointTransform(normalization=normalization))

    def validate(network: nn.Module) -> dict:
        device = next(network.parameters()).device
        scores, targets, losses = [], [], []
        for i in range(len(dataset)):
            item = dataset[i]
            logits = network(item["image"][None].to(device))["logits"].float().cpu()
            label = item["label"][None]
            losses.append(float(F.multilabel_soft_margin_loss(logits, label)))
            scores.append(logits[0].numpy())
            targets.append(label[0].numpy())
        m_ap = mean_average_precision(np.stack(scores), np.stack(targets))
        return {"mAP": m_ap, "loss": float(np.mean(losses)), "score": m_ap}

    return validate


class CamTrain(TrainingStage):
    """PSA's classifier: network ``cam``, multilabel soft-margin loss, mAP validation."""

    name, config, network = "cam_train", CamTrainConfig, "cam"
    module_class = CamTrainModule

    def network_name(self, cfg) -> str:
        return getattr(cfg, "model", None) or self.network

    def network_kwargs(self, cfg, data) -> dict:
        return {"backbone": cfg.backbone, "num_classes": data.num_classes}

    def train_module(self, network, cfg) -> TrainModule:
        return self.module_class(network)

    def check_inputs(self, cfg, data) -> None:
        from wsss.models.registry import check_family

        if getattr(cfg, "model", None) is not None:
            check_family(cfg.model, "cam")
        data.ids(cfg.split)  # unknown split -> UserError before anything is written
        if cfg.val_split:
            data.ids(cfg.val_split)

    def validator(self, cfg, data, module):
        return classification_validator(data, cfg.val_split, module.network.normalization) if cfg.val_split else None


STAGE = CamTrain()
run = STAGE.run
