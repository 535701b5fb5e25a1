"""``wsss aff train``: AffinityNet trained on pair labels from the low- and high-alpha CRF label artifacts.

Defaults are PSA's recipe (``train_aff.py``): train_aug, batch 8, 8 epochs, lr 0.1 with the group multipliers
and poly decay, weight decay 5e-4 (and SGD momentum = weight decay, the reference quirk; see ``cam train``),
colour jitter, crop 448 padded with raw black (the crop comes before normalisation there), flip, no rescaling,
frozen batch norm and early blocks. Pair labels: foreground from the low alpha, background from the high alpha,
the rest and the padding ignored; loss ``bg/4 + fg/4 + neg/2`` as the reference code computes it.
Under DDP each process normalises the three terms by its own pair counts and the gradients are averaged, where
PSA (one process, DataParallel) divided by the counts of the whole batch: equal in expectation, not bit-equal.

Departure: the CRF stage writes hard labels (PNG), so a stride-8 block takes its majority label, where PSA
averaged the CRF marginals over the block before the argmax.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from wsss.artifacts.items import FORMATS, check_covers
from wsss.config import option
from wsss.models.train_module import TrainModule
from wsss.engine.stage import TrainingStage, TrainStageConfig
from wsss.errors import UserError
from wsss.ops.affinity import RADIUS, STRIDE, affinity_label_map, affinity_loss, feature_affinity, pair_labels


@dataclasses.dataclass(frozen=True)
class AffTrainConfig(TrainStageConfig):
    la: Optional[Path] = option(None, "Low-alpha CRF `label` artifact (confident foreground).", required=True)
    ha: Optional[Path] = option(None, "High-alpha CRF `label` artifact (confident background).", required=True)
    lr: float = 0.1
    weight_decay: float = 5e-4
    psa_momentum_quirk: bool = True
    batch_size: int = 8
    epochs: int = 8
    crop: int = option(448, "Training crop size in pixels (a multiple of 8).", type="count")
    jitter: tuple[float, ...] = (0.3, 0.3, 0.3, 0.1)
    radius: int = option(RADIUS, "Pair radius at stride 8.", type="count")
    val_every: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.radius < 2:
            raise UserError(f"--radius must be >= 2, got {self.radius}")

    def transform_recipe(self):
        """PSA train_aff: colour jitter, crop padded with raw black, flip; no rescaling."""
        from wsss.data.transforms import JointTransformConfig

        return dataclasses.replace(JointTransformConfig.psa_aff(self.crop), jitter=tuple(self.jitter))


class AffTrainModule(TrainModule):
    """AffinityNet features -> pair affinities -> the reference loss against pair labels of la/ha."""

    def __init__(self, network: torch.nn.Module, radius: int = RADIUS):
        super().__init__(network)
        self.radius = radius

    def forward(self, batch: dict) -> dict:
        features = self.network(batch["image"])["features"]
        maps = torch.stack([affinity_label_map(la, ha, STRIDE) for la, ha in zip(batch["la"], batch["ha"])])
        if maps.shape[-2:] != features.shape[-2:]:
            raise UserError(f"--crop: label grid {tuple(maps.shape[-2:])} differs from the feature map "
                            f"{tuple(features.shape[-2:])}; use a crop that is a multiple of {STRIDE}")
        labels = {k: v.to(features.device) for k, v in pair_labels(maps.to(features.device), self.radius).items()}
        losses = affinity_loss(feature_affinity(features, self.radius), labels)
        return {**losses, **{f"n_{k}": v.sum() for k, v in labels.items()}}


def label_reader(folder: Path, name: str):
    """``id -> uint8 (H, W)`` from a label artifact; a missing id is a UserError naming the artifact."""
    fmt = FORMATS["label"]

    def read(image_id: str):
        path = fmt.path(folder, image_id)
        if not path.is_file():
            raise UserError(f"--{name} {folder}: no label PNG for id {image_id}")
        return fmt.read(path)

    return read


class AffTrain(TrainingStage):
    """AffinityNet (network ``aff``) on pair labels from the la/ha label artifacts."""

    name, config, network = "aff_train", AffTrainConfig, "aff"

    def train_module(self, network, cfg) -> TrainModule:
        return AffTrainModule(network, cfg.radius)

    def check_inputs(self, cfg, data) -> None:
        if cfg.la is None or cfg.ha is None:
            raise UserError("--data, --la and --ha are required")
        if cfg.crop % STRIDE or cfg.crop // STRIDE < 2 * cfg.radius - 1:
            raise UserError(f"--crop must be a multiple of {STRIDE} of at least {STRIDE * (2 * cfg.radius - 1)} "
                            f"(pairs of radius {cfg.radius} on the stride-{STRIDE} grid), got {cfg.crop}")
        ids = data.ids(cfg.split)
        for name in ("la", "ha"):
            check_covers(getattr(cfg, name), "label", cfg.split, ids, f"--{name}")

    def input_artifacts(self, cfg) -> dict:
        return {"la": cfg.la, "ha": cfg.ha}

    def dataset(self, cfg, data, transform):
        from wsss.data.torch_datasets import SegmentationDataset

        masks = {"la": label_reader(cfg.la, "la"), "ha": label_reader(cfg.ha, "ha")}
        return SegmentationDataset(data, cfg.split, masks, transform)


STAGE = AffTrain()
run = STAGE.run
