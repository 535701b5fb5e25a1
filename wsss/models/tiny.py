"""A tiny backbone (about half a million parameters, output stride 8) so every method runs on CPU.

It has the taps of the big backbones (``conv3`` at stride 4; ``conv4``, ``conv5``, ``conv6``/``out`` at
stride 8), so AffinityNet's three taps and the single-stage taps exist on it too. It is trained from scratch on
the toy data: no ImageNet file, nothing frozen, BatchNorm trains normally. Inputs use the ImageNet RGB
normalisation, like the ResNets.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from wsss.models.backbone import Backbone
from wsss.models.registry import register_model

# name -> (in, out, stride of the first conv, dilation); each stage is two conv-BN-ReLU units.
TINY_STAGES = (
    ("stage2", 16, 32, 2, 1),
    ("stage3", 32, 48, 2, 1),
    ("stage4", 48, 64, 2, 1),
    ("stage5", 64, 96, 1, 2),
    ("stage6", 96, 128, 1, 4),
)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("tiny", kind="backbone", init_weights="")
class TinyBackbone(Backbone):
    """Tiny CPU backbone (~0.5 M parameters, output stride 8) with the taps of the big ones.

    Layout: ``stem`` 3->16 (stride 1), then five stages of two 3x3 conv-BN-ReLU units: ``stage2`` 32 ch (s2),
    ``stage3`` 48 ch (s4), ``stage4`` 64 ch (s8), ``stage5`` 96 ch (s8, dilation 2), ``stage6`` 128 ch (s8,
    dilation 4).

    Taps (all after ReLU): ``conv3`` = stage3 output (48 ch, stride 4); ``conv4`` = stage4 output (64 ch, s8);
    ``conv5`` = stage5 output (96 ch, s8); ``conv6`` = ``out`` = stage6 output (128 ch, s8).
    """

    name = "tiny"
    out_channels = {"conv3": 48, "conv4": 64, "conv5": 96, "conv6": 128, "out": 128}
    strides = {"conv3": 4, "conv4": 8, "conv5": 8, "conv6": 8, "out": 8}
    default_frozen = ()
    default_freeze_bn = False
    checkpoint_blocks = True  # the stem and each stage (see Backbone.run_block)

    def __init__(self, *, freeze_bn: Optional[bool] = None, frozen: Optional[Sequence[str]] = None):
        super().__init__(freeze_bn=freeze_bn, frozen=frozen)
        self.stem = nn.Sequential(*_conv_bn_relu(3, 16))
        for name, cin, cout, stride, dilation in TINY_STAGES:
            self.add_module(name, nn.Sequential(*_conv_bn_relu(cin, cout, stride, dilation),
                                                *_conv_bn_relu(cout, cout, 1, dilation)))
        self._apply_freezing()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised -> taps (see the class docstring)."""
        self.check_input(x)
        x = self.run_block(self.stage2, self.run_block(self.stem, x))
        conv3 = self.run_block(self.stage3, x)
        conv4 = self.run_block(self.stage4, conv3)
        conv5 = self.run_block(self.stage5, conv4)
        conv6 = self.run_block(self.stage6, conv5)
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6, "out": conv6}
