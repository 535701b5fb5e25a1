"""ResNet-50 / ResNet-101: torchvision's networks as backbones, output stride 8, 16 or 32.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.downsample.0.weight``, ...), so the
torchvision ImageNet files ``resnet50-19c8e357.pth`` / ``resnet101-5d3b4d8f.pth`` load strictly once their
classifier ``fc.*`` is dropped (explicitly, see :func:`wsss.models.weights.load_backbone_init`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torchvision

from wsss.errors import UserError
from wsss.models.backbone import Backbone
from wsss.models.registry import register_model

# output stride -> which of layer2/3/4 keep their stride 2
_STRIDED = {8: (True, False, False), 16: (True, True, False), 32: (True, True, True)}


class ResNetBackbone(Backbone):
    """torchvision ResNet (Bottleneck) without ``avgpool``/``fc``.

    Args:
        output_stride: 8, 16 or 32. Below 32 the stride of ``layer4`` (and, for 8, of ``layer3``) is removed.
        dilate: replace each removed stride by dilation (torchvision's ``replace_stride_with_dilation``). False
            removes strides without dilating, as 1-stage-wseg's ``resnets.py`` does (its output stride 16).
        freeze_bn, frozen: see :class:`~wsss.models.backbone.Backbone`; the default freezes every BN and
            ``conv1``/``bn1`` (1-stage-wseg).

    Taps (all after the block's final ReLU):
        ``conv3``: ``layer1`` output, 256 ch, stride 4 (single-stage).
        ``conv4``: ``layer2`` output, 512 ch, stride 8.
        ``conv5``: ``layer3`` output, 1024 ch, stride 8 at output stride 8, else 16.
        ``conv6`` = ``out``: ``layer4`` output, 2048 ch, stride ``output_stride``.
    """

    layers: tuple = ()
    lr_mults = (1.0, 1.0, 10.0, 10.0)
    default_frozen = ("conv1", "bn1")
    default_freeze_bn = True
    init_drop = ("fc.weight", "fc.bias")
    checkpoint_blocks = True  # each Bottleneck of layer1..layer4 (see Backbone.run_block)

    def __init__(self, *, output_stride: int = 8, dilate: bool = True, freeze_bn: Optional[bool] = None,
                 frozen: Optional[Sequence[str]] = None):
        super().__init__(freeze_bn=freeze_bn, frozen=frozen)
        if output_stride not in _STRIDED:
            raise UserError(f"{self.name}: output_stride must be 8, 16 or 32, got {output_stride}")
        strided = _STRIDED[output_stride]
        dilation = [dilate and not s for s in strided]
        net = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(self.layers),
                                               replace_stride_with_dilation=dilation)
        if not dilate:
            for layer, keep in zip((net.layer2, net.layer3, net.layer4), strided):
                if not keep:
                    layer[0].conv2.stride = (1, 1)
                    layer[0].downsample[0].stride = (1, 1)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(net, name))
        self.dilate = dilate
        s3 = 8 if output_stride == 8 else 16
        self.strides = {"conv3": 4, "conv4": 8, "conv5": s3, "conv6": output_stride, "out": output_stride}
        self.out_channels = {"conv3": 256, "conv4": 512, "conv5": 1024, "conv6": 2048, "out": 2048}
        self._apply_freezing()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised RGB -> taps (see the class docstring)."""
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = self.run_block(block, x)
            outs.append(x)
        conv3, conv4, conv5, conv6 = outs
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6, "out": conv6}

    def torchvision_weights(self):
        """torchvision's ImageNet weight enum for this network (the same weights as the ``.pth`` file)."""
        models = torchvision.models
        return {"resnet50": models.ResNet50_Weights, "resnet101": models.ResNet101_Weights}[self.name].IMAGENET1K_V1


@register_model("resnet50", kind="backbone", init_weights="resnet50-19c8e357.pth")
class ResNet50(ResNetBackbone):
    """ResNet-50 (torchvision), output stride 8 by dilation (or 16/32), 23,508,032 parameters."""

    name = "resnet50"
    layers = (3, 4, 6, 3)


@register_model("resnet101", kind="backbone", init_weights="resnet101-5d3b4d8f.pth")
class ResNet101(ResNetBackbone):
    """ResNet-101 (torchvision), output stride 8 by dilation (or 16/32), 42,500,160 parameters."""

    name = "resnet101"
    layers = (3, 4, 23, 3)
