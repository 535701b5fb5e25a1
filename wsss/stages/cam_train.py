"""``wsss cam train``: the PSA classifier (CAM head on any zoo backbone), trained on image-level labels.

Defaults are PSA's published recipe (``train_cls.py``): train_aug, batch 16, 15 epochs, lr 0.1 with the
1x/2x/10x/20x group multipliers and poly decay (power 0.9), weight decay 5e-4, random long side in [256, 512],
flip, colour jitter (0.3, 0.3, 0.3, 0.1), normalise then crop 448 (so padding is the mean colour), multilabel
soft-margin loss, frozen batch norm and early blocks. PSA's SGD runs with momentum = weight decay (a bug the
published numbers depend on); ``psa_momentum_quirk: false`` gives ordinary momentum 0.9.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.artifacts import Manifest, input_record
from wsss.engine import TrainConfig, fit
from wsss.errors import UserError
from wsss.ops.classification import mean_average_precision


@dataclasses.dataclass(frozen=True)
class CamTrainConfig(TrainConfig):
    data: Optional[Path] = None
    split: str = "train_aug"
    val_split: Optional[str] = "val"
    backbone: str = "wideresnet38"
    init_weights: Optional[Path] = None
    lr: float = 0.1
    weight_decay: float = 5e-4
    psa_momentum_quirk: bool = True
    batch_size: int = 16
    epochs: int = 15
    crop: int = 448
    resize_long: tuple[int, ...] = (256, 512)
    jitter: tuple[float, ...] = (0.3, 0.3, 0.3, 0.1)

    def __post_init__(self):
        super().__post_init__()
        try:
            self.transform_recipe()
        except ValueError as e:  # values from --config or a recipe skip click's range checks
            raise UserError(f"augmentation settings: {e}") from None

    def transform_recipe(self):
        """PSA train_cls: random long side, flip, colour jitter, normalise, then crop with zero padding."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig(long_side_range=tuple(self.resize_long), flip=True, jitter=tuple(self.jitter),
                                    crop=self.crop)

class CamTrainModule(nn.Module):
    """Classifier + multilabel soft-margin loss; the loss the engine minimises."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return self.network.param_groups(lr, weight_decay)

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
        cam = F.interpolate(cams[present[0]][None, None], size=batch["image"].shape[-2:], mode="bilinear",
                            align_corners=False)[0, 0]
        cam = cam / (cam.max() + 1e-5)
        return {"cam": torch.stack([cam, torch.zeros_like(cam), 1 - cam]).clamp(0, 1)}


def classification_validator(data, split: str, normalization):
    """Returns ``network -> {"mAP", "loss", "score"}`` over a split (images at full size, one at a time)."""
    from wsss.data.datasets import ClassificationDataset

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


def run(cfg: CamTrainConfig) -> Manifest:
    """Train the classifier into ``cfg.out``; returns the run's ``checkpoint`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.data.datasets import ClassificationDataset
    from wsss.data.transforms import JointTransform
    from wsss.models.normalization import normalization_for
    from wsss.models.registry import build_model

    if cfg.data is None:
        raise UserError("--data is required")
    data = open_dataset(cfg.data)
    data.ids(cfg.split)  # unknown split -> UserError before anything is written
    if cfg.val_split:
        data.ids(cfg.val_split)
    if cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
        raise UserError(f"--init-weights {cfg.init_weights}: file not found")
    norm = normalization_for(cfg.backbone)
    model_kwargs = {"backbone": cfg.backbone, "num_classes": data.num_classes}

    def build():
        network = build_model("cam", **model_kwargs)
        if cfg.init_weights is not None:
            from wsss.models.weights import load_backbone_init

            load_backbone_init(network.backbone, cfg.init_weights)
        transform = JointTransform(cfg.transform_recipe(), norm)
        return CamTrainModule(network), ClassificationDataset(data, cfg.split, transform=transform)

    validate = classification_validator(data, cfg.val_split, norm) if cfg.val_split else None
    inputs = {"data": input_record(cfg.data)}
    if cfg.init_weights is not None:
        inputs["init_weights"] = {"path": str(Path(cfg.init_weights).resolve())}
    return fit(cfg, stage="cam_train", build=build, model_name="cam", model_kwargs=model_kwargs,
               split=cfg.split, inputs=inputs, validate=validate)
