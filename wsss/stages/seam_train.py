"""``wsss seam train``: SEAM (Wang et al., CVPR 2020), the classifier with the Pixel Correlation Module trained on
image-level labels with its equivariance losses (network ``seam``, loss
:class:`~wsss.models.seam_train.SeamTrainModule`).

Defaults are SEAM's published recipe (``train_SEAM.py``): train_aug, batch 8, 8 epochs, lr 0.01 with the
1x/2x/10x/20x group multipliers and poly decay (power 0.9), weight decay 5e-4, and the augmentation order of its
loader: random long side in [448, 768] (bicubic), flip, colour jitter (0.3, 0.3, 0.3, 0.1), normalise, then crop
448 (so padding is the mean colour). Its SGD, like PSA's, runs with momentum = weight decay (5e-4, the
``PolyOptimizer`` bug the published numbers depend on); ``--no-psa-momentum-quirk`` gives ordinary momentum 0.9.
Frozen as SEAM: every batch norm and, on wideresnet38, ``conv1a, b2, b2_1, b2_2``. The ImageNet initialisation is
the same file as ``wsss cam train``'s (``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth`` for wideresnet38).

Same options as ``wsss cam train`` (:class:`~wsss.stages.cam_train.ClassifierTrainConfig`), plus ``--rvmin-weight``
for the adaptive min-pooling term that is in SEAM's code but not in its paper (1 = the reference, 0 drops it).
Validation (ours; the reference has none): classification mAP on ``--val-split`` of the ``logits`` (the global
average of the raw CAM's foreground channels, what SEAM's classification loss sees). TensorBoard gets the loss terms
and the first image's CAM and PCM maps (:meth:`~wsss.models.seam_train.SeamTrainModule.visuals`).
"""
from __future__ import annotations

import dataclasses

from wsss.config import option
from wsss.errors import UserError
from wsss.models.seam_train import SeamTrainModule
from wsss.models.train_module import TrainModule
from wsss.stages.cam_train import CamTrain, ClassifierTrainConfig


@dataclasses.dataclass(frozen=True)
class SeamTrainConfig(ClassifierTrainConfig):
    """SEAM's recipe; the fields not named here keep ClassifierTrainConfig's (PSA's) defaults, which SEAM shares."""

    lr: float = 0.01
    batch_size: int = 8
    epochs: int = 8
    resize_long: tuple[int, ...] = (448, 768)
    rvmin_weight: float = option(1.0, "Weight of SEAM's adaptive min-pooling loss (in its code, not its paper; "
                                      "0 drops it).", type="non_negative")

    def __post_init__(self):
        super().__post_init__()
        if not self.rvmin_weight >= 0:
            raise UserError(f"--rvmin-weight must be >= 0, got {self.rvmin_weight}")


class SeamTrain(CamTrain):
    """SEAM: network ``seam``, SEAM's loss, mAP validation (inherited from ``cam train``)."""

    name, config, network = "seam_train", SeamTrainConfig, "seam"

    def train_module(self, network, cfg) -> TrainModule:
        return SeamTrainModule(network, rvmin_weight=cfg.rvmin_weight)


STAGE = SeamTrain()
run = STAGE.run
