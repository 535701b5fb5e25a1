"""``wsss irn train``: IRN's inter-pixel relation network trained on IR labels (irn.md §4).

Defaults are IRN's ``train_irn`` (§4.7): network ``irn`` (boundary and displacement heads on the frozen backbone;
give the ImageNet ResNet-50 as ``--init-weights``, IRN does not start from the CAM classifier), train_aug, batch
32, 3 epochs, lr 0.1 with the two groups (``fc_edge*`` 1x, ``fc_dp*`` 10x, both with weight decay), weight decay
1e-4, poly 0.9, and the momentum quirk (IRN's PolyOptimizer has PSA's bug). Augmentation (§4.6): random scale in
[0.5, 1.5), flip, crop 512 (image padded with 0 after normalisation, label with 255). The loss samples the IR
label at pixel ``4i + 2`` of the stride-4 grid and compares pairs of radius 10 (:class:`IrnTrainModule`).

After the last iteration, before ``final.pt`` is written, the displacement mean shift is estimated as IRN does
(§4.7): on ``--shift-split`` (IRN's ``infer_list``, VOC train), top-left crops zero-padded to the crop size, no
flip, batches of ``batch_size`` with the last partial batch dropped (a split smaller than one batch is one batch),
the mean over batches of each batch's mean displacement, padding included. It is stored in the checkpoint (the
network's ``mean_shift`` buffer) and in the manifest's metrics.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

import torch

from wsss.artifacts.items import check_covers
from wsss.config import option
from wsss.engine.hooks import Hook
from wsss.engine.stage import TrainingStage, TrainStageConfig
from wsss.errors import UserError
from wsss.models.irn import IrnTrainModule
from wsss.ops.irn import LABEL_STRIDE
from wsss.ops.path_index import TRAIN_RADIUS
from wsss.process import LOG
from wsss.stages.aff_train import label_reader


@dataclasses.dataclass(frozen=True)
class IrnTrainConfig(TrainStageConfig):
    labels: Optional[Path] = option(None, "IR labels, a `label` artifact (`wsss crf labels --fg-threshold 0.30 "
                                          "--bg-threshold 0.05`).", required=True)
    backbone: str = "resnet50"
    lr: float = 0.1
    weight_decay: float = 1e-4
    psa_momentum_quirk: bool = True
    batch_size: int = 32
    epochs: int = 3
    crop: int = option(512, "Training crop size in pixels (a multiple of 4).", type="count")
    scale_range: tuple[float, ...] = (0.5, 1.5)
    radius: int = option(TRAIN_RADIUS, "Pair radius on the stride-4 grid.", type="count")
    shift_split: Optional[str] = option("train", "Split the displacement mean shift is estimated on after training "
                                                 "(IRN's infer_list; empty: none).")
    val_every: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.radius < 2:
            raise UserError(f"--radius must be >= 2, got {self.radius}")
        grid = (2 * self.radius - 1) * LABEL_STRIDE
        if self.crop % LABEL_STRIDE or self.crop < grid:
            raise UserError(f"--crop must be a multiple of {LABEL_STRIDE} of at least {grid} (pairs of radius "
                            f"{self.radius} on the stride-{LABEL_STRIDE} grid), got {self.crop}")

    def transform_recipe(self):
        """IRN train_irn: random scale, flip, crop padded with 0 (image, after normalisation) and 255 (label)."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig(scale_range=tuple(self.scale_range), flip=True, crop=self.crop)


def top_left_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """IRN's ``top_left_crop``: (3, H, W) -> (3, size, size), the image at the top left, zeros elsewhere."""
    out = image.new_zeros(3, size, size)
    h, w = min(image.shape[1], size), min(image.shape[2], size)
    out[:, :h, :w] = image[:, :h, :w]
    return out


class MeanShiftEstimate(Hook):
    """IRN's displacement mean shift, estimated after the last iteration and before ``final.pt`` (rank 0, which
    writes the checkpoints)."""

    def __init__(self, data, split: str, crop: int, batch_size: int):
        self.data, self.split, self.crop, self.batch_size = data, split, crop, batch_size

    def batches(self, normalization, device) -> Iterator[torch.Tensor]:
        """Normalised top-left crops, (B, 3, crop, crop), IRN's drop_last batches."""
        ids = self.data.ids(self.split)
        count = len(ids) // self.batch_size * self.batch_size or len(ids)
        for start in range(0, count, self.batch_size):
            images = [torch.as_tensor(normalization.apply(self.data.read_image(i))).float()
                      for i in ids[start:start + self.batch_size]]
            yield torch.stack([top_left_crop(x, self.crop) for x in images]).to(device)

    def after_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        network = t.module.network
        shift = network.estimate_mean_shift(self.batches(network.normalization, t.device))
        t.state.metrics = {**t.state.metrics, "mean_shift": [float(v) for v in shift]}
        LOG.info("mean shift of the displacement field on %s: (%.4f, %.4f)", self.split, *shift.tolist())


class IrnTrain(TrainingStage):
    """IRN's network ``irn`` on pair labels from an IR-label artifact, then the mean-shift estimate."""

    name, config, network = "irn_train", IrnTrainConfig, "irn"

    def train_module(self, network, cfg) -> IrnTrainModule:
        return IrnTrainModule(network, cfg.radius)

    def check_inputs(self, cfg, data) -> None:
        if cfg.labels is None:
            raise UserError("--data and --labels are required")
        if cfg.init_weights is None:
            LOG.warning("irn train: no --init-weights: the frozen backbone keeps its random initialisation (IRN's is "
                        "the ImageNet ResNet-50)")
        check_covers(cfg.labels, "label", cfg.split, data.ids(cfg.split), "--labels")
        if cfg.shift_split:
            data.ids(cfg.shift_split)

    def input_artifacts(self, cfg) -> dict:
        return {"labels": cfg.labels}

    def dataset(self, cfg, data, transform):
        from wsss.data.torch_datasets import SegmentationDataset

        return SegmentationDataset(data, cfg.split, {"ir_label": label_reader(cfg.labels, "labels")}, transform)

    def hooks(self, cfg, data, module) -> list[Hook]:
        return [MeanShiftEstimate(data, cfg.shift_split, cfg.crop, cfg.batch_size)] if cfg.shift_split else []


STAGE = IrnTrain()
run = STAGE.run
