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
from torch import nn

from wsss.artifacts import Manifest, input_record, read_manifest
from wsss.data.palette import read_label_png
from wsss.engine import TrainConfig, fit
from wsss.errors import UserError
from wsss.ops.affinity import RADIUS, STRIDE, affinity_label_map, affinity_loss, feature_affinity, pair_labels


@dataclasses.dataclass(frozen=True)
class AffTrainConfig(TrainConfig):
    data: Optional[Path] = None
    split: str = "train_aug"
    la: Optional[Path] = None
    ha: Optional[Path] = None
    backbone: str = "wideresnet38"
    init_weights: Optional[Path] = None
    lr: float = 0.1
    weight_decay: float = 5e-4
    psa_momentum_quirk: bool = True
    batch_size: int = 8
    epochs: int = 8
    crop: int = 448
    jitter: tuple[float, ...] = (0.3, 0.3, 0.3, 0.1)
    radius: int = RADIUS
    val_every: int = 0

    def __post_init__(self):
        super().__post_init__()
        try:
            self.transform_recipe()
        except ValueError as e:  # values from --config or a recipe skip click's range checks
            raise UserError(f"augmentation settings: {e}") from None
        if self.radius < 2:
            raise UserError(f"--radius must be >= 2, got {self.radius}")

    def transform_recipe(self):
        """PSA train_aff: colour jitter, crop padded with raw black, flip; no rescaling."""
        from wsss.data.transforms import JointTransformConfig

        return dataclasses.replace(JointTransformConfig.psa_aff(self.crop), jitter=tuple(self.jitter))


class AffTrainModule(nn.Module):
    """AffinityNet features -> pair affinities -> the reference loss against pair labels of la/ha."""

    def __init__(self, network: nn.Module, radius: int = RADIUS):
        super().__init__()
        self.network, self.radius = network, radius

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return self.network.param_groups(lr, weight_decay)

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
    folder = Path(folder)

    def read(image_id: str):
        path = folder / f"{image_id}.png"
        if not path.is_file():
            raise UserError(f"--{name} {folder}: no label PNG for id {image_id}")
        return read_label_png(path)

    return read


def _check_labels(folder: Path, name: str, ids: list) -> None:
    try:
        read_manifest(folder, kind="label")
    except UserError as e:
        raise UserError(f"--{name} {e}") from None
    missing = [i for i in ids if not (Path(folder) / f"{i}.png").is_file()]
    if missing:
        raise UserError(f"--{name} {folder}: {len(missing)} ids of the split have no label PNG "
                        f"(first: {', '.join(missing[:3])})")


def run(cfg: AffTrainConfig) -> Manifest:
    """Train AffinityNet into ``cfg.out``; returns the run's ``checkpoint`` manifest."""
    from wsss.data.dataset import open_dataset
    from wsss.data.datasets import SegmentationDataset
    from wsss.data.transforms import JointTransform
    from wsss.models.normalization import normalization_for
    from wsss.models.registry import build_model

    if cfg.data is None or cfg.la is None or cfg.ha is None:
        raise UserError("--data, --la and --ha are required")
    if cfg.crop % STRIDE or cfg.crop // STRIDE < 2 * cfg.radius - 1:
        raise UserError(f"--crop must be a multiple of {STRIDE} of at least {STRIDE * (2 * cfg.radius - 1)} "
                        f"(pairs of radius {cfg.radius} on the stride-{STRIDE} grid), got {cfg.crop}")
    data = open_dataset(cfg.data)
    ids = data.ids(cfg.split)
    _check_labels(cfg.la, "la", ids)
    _check_labels(cfg.ha, "ha", ids)
    if cfg.init_weights is not None and not Path(cfg.init_weights).is_file():
        raise UserError(f"--init-weights {cfg.init_weights}: file not found")
    model_kwargs = {"backbone": cfg.backbone}

    def build():
        network = build_model("aff", **model_kwargs)
        if cfg.init_weights is not None:
            from wsss.models.weights import load_backbone_init

            load_backbone_init(network.backbone, cfg.init_weights)
        transform = JointTransform(cfg.transform_recipe(), normalization_for(cfg.backbone))
        masks = {"la": label_reader(cfg.la, "la"), "ha": label_reader(cfg.ha, "ha")}
        return AffTrainModule(network, cfg.radius), SegmentationDataset(data, cfg.split, masks, transform)

    inputs = {"data": input_record(cfg.data), "la": input_record(cfg.la), "ha": input_record(cfg.ha)}
    if cfg.init_weights is not None:
        inputs["init_weights"] = {"path": str(Path(cfg.init_weights).resolve())}
    return fit(cfg, stage="aff_train", build=build, model_name="aff", model_kwargs=model_kwargs, split=cfg.split,
               inputs=inputs)
