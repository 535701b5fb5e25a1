"""PSA's AffinityNet (``resnet38_aff`` / ``vgg16_aff``) on any registered backbone: the feature part only.

Three taps of the backbone go through 1x1 convs without bias (``f8_3`` on ``conv4`` -> 64 ch, ``f8_4`` on
``conv5`` -> 128, ``f8_5`` on ``conv6`` -> 256), each followed by ELU (with a GroupNorm before the ELU on VGG16:
``gn8_3`` GN(8, 64), ``gn8_4`` GN(16, 128), ``gn8_5`` GN(32, 256)); the concatenation (448 ch) goes through ``f9``
(1x1, 448 -> 448, no bias) and ELU. ``forward`` returns these features; the pair affinities
``exp(-mean_c |f_i - f_j|)`` over the radius-5 pairs live in :mod:`wsss.ops.affinity`.

Initialisation as the reference: Kaiming-normal for ``f8_*``, Xavier-uniform with gain 4 for ``f9``. The
``f8_*``/``f9`` convs are from-scratch layers (10x lr); the GroupNorms are not (1x weights, 2x biases), as in PSA.
On VGG16 the backbone is built with ``fc6_dilation=4`` (PSA ``vgg16_aff``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model

AFF_BACKBONES = ("wideresnet38", "vgg16", "resnet50", "resnet101", "tiny")
# (conv name, group norm name, backbone tap, output channels, GroupNorm groups)
AFF_BRANCHES = (("f8_3", "gn8_3", "conv4", 64, 8), ("f8_4", "gn8_4", "conv5", 128, 16),
                ("f8_5", "gn8_5", "conv6", 256, 32))
FEATURE_CHANNELS = sum(b[3] for b in AFF_BRANCHES)  # 448


@register_model("aff", backbones=AFF_BACKBONES, released={"wideresnet38": "res38_aff.pth"})
class AffinityNet(BackboneNetwork):
    """PSA AffinityNet features (resnet38_aff / vgg16_aff) on any backbone.

    Args:
        backbone: registry name of the backbone; its ``conv4``, ``conv5`` and ``conv6`` taps must share a stride.
        group_norm: GroupNorm after ``f8_*``; None = as the reference (True for VGG16 only).
        backbone_kwargs: extra keyword arguments for the backbone.

    Frozen in training, as in PSA: every backbone BN and the early blocks.
    """

    new_modules = tuple(b[0] for b in AFF_BRANCHES) + ("f9",)
    head_modules = new_modules + tuple(b[1] for b in AFF_BRANCHES)
    backbone_defaults = {"vgg16": {"fc6_dilation": 4}}

    def __init__(self, *, backbone: str = "wideresnet38", group_norm: Optional[bool] = None,
                 backbone_kwargs: Optional[dict] = None):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        strides = {self.backbone.strides[b[2]] for b in AFF_BRANCHES}
        if len(strides) != 1:
            raise UserError(f"aff: backbone {backbone} has its conv4/conv5/conv6 taps at strides "
                            f"{sorted(strides)}; AffinityNet needs one stride (use output_stride=8)")
        self.group_norm = backbone == "vgg16" if group_norm is None else bool(group_norm)
        for conv, gn, tap, channels, groups in AFF_BRANCHES:
            self.add_module(conv, nn.Conv2d(self.backbone.out_channels[tap], channels, 1, bias=False))
            nn.init.kaiming_normal_(getattr(self, conv).weight)
            if self.group_norm:
                self.add_module(gn, nn.GroupNorm(groups, channels))
        self.f9 = nn.Conv2d(FEATURE_CHANNELS, FEATURE_CHANNELS, 1, bias=False)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` from the key names and ``group_norm`` from the presence of ``gn8_3.weight``."""
        return {**super().original_model_kwargs(state_dict), "group_norm": "gn8_3.weight" in state_dict}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised -> ``{"features": (B, 448, h, w)}`` at the backbone's stride (8)."""
        taps = self.backbone(x)
        branches = []
        for conv, gn, tap, _, _ in AFF_BRANCHES:
            y = getattr(self, conv)(taps[tap])
            if self.group_norm:
                y = getattr(self, gn)(y)
            branches.append(F.elu(y))
        return {"features": F.elu(self.f9(torch.cat(branches, dim=1)))}
