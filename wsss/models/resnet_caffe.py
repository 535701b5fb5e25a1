"""The MSRA/Caffe ResNet-101 of DeepLab-v2 (deeplab-pytorch's ``ResNet``), output stride 8.

This is **not** torchvision's ResNet (:mod:`wsss.models.resnet`): the stride of a downsampling bottleneck sits in
its first 1x1 conv (``reduce``), not in the 3x3; the stem's max pool uses ``ceil_mode=True``, so feature maps are
``h3 = ceil(h2 / 2)`` with ``h2 = ceil((ceil(H / 2) - 1) / 2) + 1`` (321 -> 41, 375 x 500 -> 48 x 63, where
torchvision gives 47 x 63); every conv is bias-free and followed by ``BatchNorm2d(eps=1e-5, momentum=0.001)``.

Module and parameter names are deeplab-pytorch's (``retrain.md`` §1.1), e.g. ``layer1.conv1.conv.weight``,
``layer3.block1.reduce.conv.weight`` (stride 2), ``layer2.block1.shortcut.bn.running_var``, so its converted
initialisations (``deeplabv1_resnet101-coco.pth``, ``deeplabv1_resnet101-imagenet.pth``) load strictly once their
classifier ``fc.weight``/``fc.bias`` is dropped (explicitly: ``init_drop``, see
:func:`wsss.models.weights.load_backbone_init`).

Input: BGR, 0..255, Caffe mean (104.008, 116.669, 122.675) subtracted, no std (the ``vgg16`` convention).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from wsss.models.backbone import Backbone
from wsss.models.registry import register_model

IMAGENET_FILE = "deeplabv1_resnet101-imagenet.pth"
COCO_FILE = "deeplabv1_resnet101-coco.pth"
BN_EPS, BN_MOMENTUM = 1e-5, 0.001
RESNET101_BLOCKS = (3, 4, 23, 3)
# layer name, output channels, stride of block1, dilation (DeepLab-v2: output stride 8)
LAYERS = (("layer2", 256, 1, 1), ("layer3", 512, 2, 1), ("layer4", 1024, 1, 2), ("layer5", 2048, 1, 4))
STEM_CHANNELS = 64


class ConvBn(nn.Module):
    """``conv`` (bias-free) -> ``bn`` [-> ReLU]: deeplab-pytorch's conv unit, keys ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class CaffeBottleneck(nn.Module):
    """``reduce`` 1x1 (carries the stride) -> ``conv3x3`` (padding = dilation) -> ``increase`` 1x1 (no ReLU),
    plus ``shortcut`` 1x1 conv + BN (no ReLU) when ``downsample``; ReLU after the sum.
    """

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, downsample: bool):
        super().__init__()
        mid = cout // 4
        self.reduce = ConvBn(cin, mid, 1, stride)
        self.conv3x3 = ConvBn(mid, mid, 3, 1, dilation, dilation)
        self.increase = ConvBn(mid, cout, 1, relu=False)
        self.shortcut = ConvBn(cin, cout, 1, stride, relu=False) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H / stride, W / stride)."""
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.increase(self.conv3x3(self.reduce(x))) + identity)


class CaffeResLayer(nn.Module):
    """``block1`` .. ``blockN``; only ``block1`` has a shortcut conv and the stride."""

    def __init__(self, n_blocks: int, cin: int, cout: int, stride: int, dilation: int):
        super().__init__()
        for i in range(n_blocks):
            block = CaffeBottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1, dilation, i == 0)
            self.add_module(f"block{i + 1}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


class CaffeStem(nn.Module):
    """``conv1`` 7x7 stride 2 (+ BN + ReLU), then ``pool`` max 3x3 stride 2 padding 1 with ``ceil_mode=True``."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBn(3, STEM_CHANNELS, 7, 2, 3)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv1(x))


@register_model("resnet101_caffe", kind="backbone", init_weights=IMAGENET_FILE)
class ResNet101Caffe(Backbone):
    """Caffe-layout ResNet-101 of DeepLab-v2 (deeplab-pytorch), output stride 8, 42,500,160 parameters.

    Args:
        blocks: bottlenecks in ``layer2``..``layer5``; (3, 4, 23, 3) is ResNet-101. Fewer (e.g. (1, 1, 1, 1))
            keep the layout and key pattern for CPU tests.
        freeze_bn: default True, as deeplab-pytorch (``freeze_bn``: every BN in eval mode, affine never stepped).
        frozen: blocks to freeze; default none (deeplab-pytorch trains every conv).

    Layout: ``layer1`` = stem (64 ch, stride 4); ``layer2`` 256 ch (s4); ``layer3`` 512 ch (s8, stride in
    ``block1.reduce``); ``layer4`` 1024 ch (s8, dilation 2); ``layer5`` 2048 ch (s8, dilation 4).

    Taps (after each layer's final ReLU): ``conv3`` = layer2 (256, s4), ``conv4`` = layer3 (512, s8),
    ``conv5`` = layer4 (1024, s8), ``conv6`` = ``out`` = layer5 (2048, s8).

    Learning-rate multipliers (1, 1, 10, 20): deeplab-pytorch's backbone convs 1x, ASPP weights 10x, ASPP biases
    20x (the backbone has no biases; frozen BN is in no group).
    """

    name = "resnet101_caffe"
    out_channels = {"conv3": 256, "conv4": 512, "conv5": 1024, "conv6": 2048, "out": 2048}
    strides = {"conv3": 4, "conv4": 8, "conv5": 8, "conv6": 8, "out": 8}
    lr_mults = (1.0, 1.0, 10.0, 20.0)
    default_frozen = ()
    default_freeze_bn = True
    init_drop = ("fc.weight", "fc.bias")
    checkpoint_blocks = True  # the stem and each bottleneck (see Backbone.run_block)

    def __init__(self, *, blocks: Sequence[int] = RESNET101_BLOCKS, freeze_bn: Optional[bool] = None,
                 frozen: Optional[Sequence[str]] = None):
        super().__init__(freeze_bn=freeze_bn, frozen=frozen)
        self.blocks = tuple(int(b) for b in blocks)
        if len(self.blocks) != len(LAYERS) or min(self.blocks) < 1:
            raise ValueError(f"resnet101_caffe: blocks must be 4 counts >= 1, got {tuple(blocks)}")
        self.layer1 = CaffeStem()
        cin = STEM_CHANNELS
        for n, (name, cout, stride, dilation) in zip(self.blocks, LAYERS):
            self.add_module(name, CaffeResLayer(n, cin, cout, stride, dilation))
            cin = cout
        self._apply_freezing()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) Caffe-normalised BGR -> taps (see the class docstring)."""
        self.check_input(x)
        x = self.run_block(self.layer1, x)
        outs = []
        for layer in (self.layer2, self.layer3, self.layer4, self.layer5):
            for block in layer.children():
                x = self.run_block(block, x)
            outs.append(x)
        conv3, conv4, conv5, conv6 = outs
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6, "out": conv6}
