"""The train module of stage-2 segmentation retraining: any DeepLab network + (balanced) cross-entropy.

Every logits map the network returns is supervised (``retrain.md`` §2): DeepLab-v2 with MSC returns four
(``logits_full``, ``logits_s0.5``, ``logits_s0.75`` and their max ``logits``), each compared with the labels
nearest-resized to its own size and summed; the DeepLab-v1 heads return ``logits`` at the input size;
torchvision's DeepLabV3 adds ``aux_logits``, weighted 0.5. Gradient accumulation (deeplab-pytorch's 5 x 2) is the
engine's business: this module returns the loss of one forward batch.

Example:
    >>> import torch
    >>> from wsss.models import build_model
    >>> net = build_model("deeplabv2_resnet101", backbone="tiny", num_classes=3)
    >>> module = SegTrainModule(net, loss="balanced_ce")
    >>> out = module({"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, 3, (2, 64, 64))})
    >>> sorted(out)
    ['ce', 'ce_full', 'ce_s0.5', 'ce_s0.75', 'loss']
"""
from __future__ import annotations

import torch
from torch import nn

from wsss.models.train_module import TrainModule
from wsss.ops import IGNORE_INDEX
from wsss.ops.seg_loss import LOSSES, segmentation_loss

AUX_KEY = "aux_logits"
TV_AUX_WEIGHT = 0.5


def logit_outputs(outputs: dict) -> dict:
    """The supervised maps of a network's output dict: ``logits``, ``logits_*`` and ``aux_logits``."""
    return {k: v for k, v in outputs.items() if k.startswith("logits") or k == AUX_KEY}


class SegTrainModule(TrainModule):
    """Segmentation network + loss over all its logits maps.

    Args:
        network: a segmentation network whose forward returns ``logits`` (and possibly ``logits_*``,
            ``aux_logits``), e.g. ``deeplabv2_resnet101``, ``deeplabv1_resnet38``, ``deeplab_largefov_vgg16``,
            ``deeplabv3_resnet101``.
        loss: ``"ce"`` (deeplab-pytorch, SEAM/sscb, torchvision) or ``"balanced_ce"`` (AdvCAM / ReCAM / CLIP-ES).
        aux_weight: weight of ``aux_logits`` (torchvision's 0.5).
        ignore_index: the ignore label of the masks.
    """

    def __init__(self, network: nn.Module, *, loss: str = "ce", aux_weight: float = TV_AUX_WEIGHT,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__(network)
        if loss not in LOSSES:
            raise ValueError(f"unknown segmentation loss {loss!r}: expected one of {', '.join(LOSSES)}")
        self.loss, self.aux_weight, self.ignore_index = loss, float(aux_weight), ignore_index

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """batch: ``image`` (B, 3, H, W) normalised for the network, ``mask`` (B, H, W) int64 labels, 255 ignore.

        Returns:
            ``{"loss": scalar, "ce": ..., "ce_full": ..., ...}``: the weighted sum and each unweighted term.
        """
        image = batch["image"]
        outputs = logit_outputs(self.network(image))
        if not outputs:
            raise ValueError(f"{type(self.network).__name__} returned no logits maps")
        mask = batch["mask"].to(image.device, non_blocking=True).long()
        weights = {AUX_KEY: self.aux_weight} if AUX_KEY in outputs else {}
        return segmentation_loss(outputs, mask, kind=self.loss, weights=weights, ignore_index=self.ignore_index)
