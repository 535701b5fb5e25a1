"""DeepLab-CRF-LargeFOV on VGG16 (PSA's "Ours-DeepLab", deeplab-public; ``retrain.md`` §1.3).

::

    vgg16 conv1_1..conv5_3 (+ pool1..pool4) -> pool5 max 3x3 s1 p1 -> pool5a avg 3x3 s1 p1
    -> fc6 3x3 dilation 12 (512 -> 1024) + ReLU + Dropout(0.5) -> fc7 1x1 + ReLU + Dropout(0.5)
    -> fc8_voc12 1x1 (1024 -> C) = logits at stride 8

The convolutions are the registered ``vgg16`` backbone's (``fc6_dilation=12``), so ``vgg16_20M.pth`` (whose fc6 is
already 3x3x1024) initialises it strictly; ``fc8_voc12`` is new, N(0, 0.01) weights and 0 biases. The original flat
layout (``conv1_1.weight`` .., ``fc8_voc12.weight``) maps onto ours through ``import_original_state_dict``.
The logits stay at stride 8: deeplab-public computes its loss against labels shrunk to that size, and upsamples
bilinearly at test time. [secondary: the deeplab-public prototxt is not in the reference store; the pools and the
fc8 initialisation follow ``psa:network/vgg16_20M.prototxt`` and the DeepLab-v1 convention.]
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model
from wsss.models.vgg16 import VGG_CONVS, VGG_POOLS

LARGEFOV_DILATION = 12
FC8_INIT_STD = 0.01


@register_model("deeplab_largefov_vgg16", backbones=("vgg16",), family="seg")
class DeepLabLargeFOV(BackboneNetwork):
    """DeepLab-LargeFOV (v1) on the dilated VGG16: fc6 dilation 12, pool5/pool5a, fc8 head.

    Args:
        num_classes: output channels including the background (21 on VOC).
        backbone: ``vgg16`` only (the network uses its fc6/fc7).
        backbone_kwargs: more backbone arguments; by default ``fc6_dilation=12`` and nothing frozen
            (deeplab-public trains every layer; PSA's classifier freezes conv1/conv2, pass ``frozen`` for that).

    Input: BGR, Caffe mean subtracted (``normalization``). Learning-rate groups: pretrained weights 1x, biases 2x,
    ``fc8_voc12`` 10x / 20x.
    """

    new_modules = ("fc8_voc12",)
    backbone_defaults = {"vgg16": {"fc6_dilation": LARGEFOV_DILATION, "frozen": ()}}

    def __init__(self, *, num_classes: int = 21, backbone: str = "vgg16", backbone_kwargs: Optional[dict] = None):
        if backbone != "vgg16":
            raise ValueError(f"deeplab_largefov_vgg16: the backbone must be vgg16, got {backbone!r}")
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 2:
            raise ValueError(f"deeplab_largefov_vgg16: num_classes counts the background, >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.pool5 = nn.MaxPool2d(3, stride=1, padding=1)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)
        self.drop6 = nn.Dropout(0.5)
        self.drop7 = nn.Dropout(0.5)
        self.fc8_voc12 = nn.Conv2d(1024, num_classes, 1)
        nn.init.normal_(self.fc8_voc12.weight, std=FC8_INIT_STD)
        nn.init.zeros_(self.fc8_voc12.bias)

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` from the key names and ``num_classes`` from ``fc8_voc12.weight``."""
        kwargs = super().original_model_kwargs(state_dict)
        if "fc8_voc12.weight" in state_dict:
            kwargs["num_classes"] = int(state_dict["fc8_voc12.weight"].shape[0])
        return kwargs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised BGR -> ``{"logits": (B, C, h, w)}`` at stride 8 (h = ceil(H / 8))."""
        vgg = self.backbone
        vgg.check_input(x)
        for name, *_ in VGG_CONVS:
            x = F.relu(getattr(vgg, name)(x))
            if name in VGG_POOLS:
                x = getattr(vgg, VGG_POOLS[name][0])(x)
        x = self.pool5a(self.pool5(x))
        x = self.drop6(F.relu(vgg.fc6(x)))
        x = self.drop7(F.relu(vgg.fc7(x)))
        return {"logits": self.fc8_voc12(x)}
