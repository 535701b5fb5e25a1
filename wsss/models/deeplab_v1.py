"""DeepLab-v1 on WideResNet-38: SEAM's retraining network (``head="sscb"``) and the PSA/OAA lineage (``head="psa"``).

``head="sscb"`` (semantic-segmentation-codebase ``deeplabv1``, ``retrain.md`` §1.2(a))::

    backbone out (4096, stride 8) -> conv_fov 3x3 dil 12, no bias -> bn_fov -> ReLU -> conv_fov2 1x1, no bias
    -> bn_fov2 -> ReLU -> Dropout(0.5) -> cls_conv 1x1 (bias) -> bilinear to the input size, align_corners True

Kaiming-normal (fan_out) conv weights, BN weight 1 / bias 0. Keys: ``backbone.*`` (psa's ResNet-38 names) plus
``conv_fov``, ``bn_fov``, ``conv_fov2``, ``bn_fov2``, ``cls_conv``: 242 keys, 124,220,245 parameters for 21 classes,
exactly the sscb checkpoint ``deeplabv1_resnet38_VOCDataset_itr20000_all_64.754.pth``, which therefore loads as is.

``head="psa"`` (MCTformer ``seg/network/resnet38_seg.py``, §1.2(b)): ``fc8_seg_conv1`` 3x3 dil 12 4096->512 (bias)
-> ReLU -> ``fc8_seg_conv2`` 3x3 dil 12 512->C (bias), Xavier-uniform; the logits are bilinearly upsampled to the
input size with align_corners False (the reference does it in its training script). Flat psa-style keys
(``b2.*``, ``fc8_seg_conv1.*``) map onto ours through ``import_original_state_dict``.

``bn_mode`` (default: the reference of the head):

* ``"as_reference"`` (sscb): SEAM's retraining never calls ``net.train()``, so psa's BN freezing never runs: every
  BN uses batch statistics in training (momentum 3e-4, head included), BN affine is never stepped (in no
  learning-rate group), and no block is frozen (``conv1a`` trains). The statistics depend on the per-GPU batch.
* ``"frozen"`` (psa / MCTformer): backbone BN in eval mode with its ImageNet statistics, no gradient, and
  ``conv1a`` frozen (what psa's ``resnet38d.train()`` override does); head BN (sscb head only) trains normally.
* ``"train"``: every BN trains (statistics and affine).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.network import BACKBONE_PREFIX, BackboneNetwork
from wsss.models.param_groups import param_groups
from wsss.models.registry import register_model

HEADS = ("sscb", "psa")
BN_MODES = ("as_reference", "frozen", "train")
DEFAULT_BN_MODE = {"sscb": "as_reference", "psa": "frozen"}
FOV_DILATION, FOV_CHANNELS = 12, 512
SSCB_BN_MOMENTUM = 0.0003
PSA_HEAD_LR_MULTS = (1.0, 1.0, 10.0, 10.0)  # MCTformer: backbone 1x, fc8* 10x, weights and biases alike
PSA_TRAIN_FROZEN = ("conv1a",)  # psa resnet38d.train(): BN to eval and conv1a frozen, nothing else
_BACKBONE_BN = {"as_reference": {"freeze_bn": False, "frozen": ()}, "frozen": {}, "train": {"freeze_bn": False}}


def _sscb_head(cin: int, num_classes: int) -> dict[str, nn.Module]:
    layers = {
        "conv_fov": nn.Conv2d(cin, FOV_CHANNELS, 3, padding=FOV_DILATION, dilation=FOV_DILATION, bias=False),
        "bn_fov": nn.BatchNorm2d(FOV_CHANNELS),
        "conv_fov2": nn.Conv2d(FOV_CHANNELS, FOV_CHANNELS, 1, bias=False),
        "bn_fov2": nn.BatchNorm2d(FOV_CHANNELS),
        "dropout": nn.Dropout(0.5),
        "cls_conv": nn.Conv2d(FOV_CHANNELS, num_classes, 1, bias=True),
    }
    for m in layers.values():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return layers


def _psa_head(cin: int, num_classes: int) -> dict[str, nn.Module]:
    layers = {
        "fc8_seg_conv1": nn.Conv2d(cin, FOV_CHANNELS, 3, padding=FOV_DILATION, dilation=FOV_DILATION),
        "fc8_seg_conv2": nn.Conv2d(FOV_CHANNELS, num_classes, 3, padding=FOV_DILATION, dilation=FOV_DILATION),
    }
    for m in layers.values():
        nn.init.xavier_uniform_(m.weight)
    return layers


@register_model("deeplabv1_resnet38", backbones=("wideresnet38", "tiny"),
                released={"wideresnet38": "deeplabv1_resnet38_VOCDataset_itr20000_all_64.754.pth"}, family="seg")
class DeepLabV1(BackboneNetwork):
    """DeepLab-v1 (LargeFOV-style head, dilation 12) on WideResNet-38: SEAM's retrain or the PSA-lineage head.

    Args:
        num_classes: output channels including the background (21 on VOC).
        head: ``"sscb"`` (SEAM's retrain, default) or ``"psa"`` (MCTformer / PSA lineage).
        bn_mode: ``"as_reference"``, ``"frozen"`` or ``"train"`` (module docstring); None = the head's reference.
        backbone: ``wideresnet38`` or ``tiny`` (CPU tests).
        backbone_kwargs: more backbone arguments (override what ``bn_mode`` sets).

    Input: ImageNet-normalised RGB. Output ``logits`` at the input size. Learning-rate groups: sscb head 1/2/10/20
    (pretrained w/b, new w/b); psa head 1/1/10/10.
    """

    def __init__(self, *, num_classes: int = 21, head: str = "sscb", bn_mode: Optional[str] = None,
                 backbone: str = "wideresnet38", backbone_kwargs: Optional[dict] = None):
        if head not in HEADS:
            raise ValueError(f"deeplabv1_resnet38: head must be one of {HEADS}, got {head!r}")
        bn_mode = DEFAULT_BN_MODE[head] if bn_mode is None else bn_mode
        if bn_mode not in BN_MODES:
            raise ValueError(f"deeplabv1_resnet38: bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        kwargs = dict(_BACKBONE_BN[bn_mode])
        if bn_mode == "frozen" and backbone == "wideresnet38":
            kwargs["frozen"] = PSA_TRAIN_FROZEN
        super().__init__(backbone=backbone, backbone_kwargs={**kwargs, **(backbone_kwargs or {})})
        if num_classes < 2:
            raise ValueError(f"deeplabv1_resnet38: num_classes counts the background, >= 2, got {num_classes}")
        self.num_classes, self.head, self.bn_mode = num_classes, head, bn_mode
        build = _sscb_head if head == "sscb" else _psa_head
        for name, module in build(self.backbone.out_channels["out"], num_classes).items():
            self.add_module(name, module)
        self.new_modules = tuple(n for n, m in self.named_children() if isinstance(m, nn.Conv2d))
        self.head_modules = tuple(n for n, _ in self.named_children() if n != "backbone")
        if bn_mode == "as_reference":
            self._sscb_batch_norm()

    def _sscb_batch_norm(self) -> None:
        """Batch statistics in training, affine never stepped, BN momentum 3e-4 everywhere: the backbone's
        (sscb ``resnet38d``) and the head's ``bn_fov``/``bn_fov2`` (sscb ``deeplabv1`` builds them with
        ``cfg.TRAIN_BN_MOM`` = 0.0003 in ``seamv1-pseudovoc``)."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
                m.momentum = SSCB_BN_MOMENTUM

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised RGB -> ``{"logits": (B, C, H, W)}``."""
        features = self.backbone(x)["out"]
        if self.head == "sscb":
            y = F.relu(self.bn_fov(self.conv_fov(features)))
            y = self.dropout(F.relu(self.bn_fov2(self.conv_fov2(y))))
            logits = self.cls_conv(y)
        else:
            logits = self.fc8_seg_conv2(F.relu(self.fc8_seg_conv1(features)))
        align = self.head == "sscb"
        return {"logits": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=align)}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """sscb: the backbone's 1/2/10/20; psa: 1/1/10/10 (MCTformer's backbone 1x, head 10x)."""
        mults = self.backbone.lr_mults if self.head == "sscb" else PSA_HEAD_LR_MULTS
        return param_groups(self, lr, weight_decay, new=self.new_modules, mults=mults)

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone``, ``head`` and ``num_classes`` of an sscb (``backbone.*``) or psa-style (flat) file."""
        sd = {k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k: v for k, v in state_dict.items()}
        kwargs = super().original_model_kwargs(sd)
        for head, key in (("sscb", "cls_conv.weight"), ("psa", "fc8_seg_conv2.weight")):
            if key in sd:
                kwargs.update(head=head, num_classes=int(sd[key].shape[0]))
        return kwargs
