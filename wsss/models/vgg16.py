"""The dilated VGG16 of PSA and 1-stage-wseg (DeepLab-LargeFOV style), output stride 8.

Parameter names are those of ``vgg16_20M.pth`` (the DeepLab "20M" Caffe initialisation, converted):
``conv1_1.weight`` ... ``conv5_3.bias``, ``fc6.*`` (1024, 512, 3, 3), ``fc7.*`` (1024, 1024, 1, 1): 30 tensors,
20,483,904 parameters. Only the weights come from that file; pooling and dilations are the references'.
Input: BGR, 0..255, Caffe mean subtracted (see :mod:`wsss.models.normalization`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import Backbone
from wsss.models.registry import register_model

IMAGENET_FILE = "vgg16_20M.pth"

# name, in, out, dilation; a pool follows the last conv of each of the first four stages.
VGG_CONVS = (
    ("conv1_1", 3, 64, 1), ("conv1_2", 64, 64, 1),
    ("conv2_1", 64, 128, 1), ("conv2_2", 128, 128, 1),
    ("conv3_1", 128, 256, 1), ("conv3_2", 256, 256, 1), ("conv3_3", 256, 256, 1),
    ("conv4_1", 256, 512, 1), ("conv4_2", 512, 512, 1), ("conv4_3", 512, 512, 1),
    ("conv5_1", 512, 512, 2), ("conv5_2", 512, 512, 2), ("conv5_3", 512, 512, 2),
)
# conv after which a max pool (kernel 3, padding 1) with this stride follows.
VGG_POOLS = {"conv1_2": ("pool1", 2), "conv2_2": ("pool2", 2), "conv3_3": ("pool3", 2), "conv4_3": ("pool4", 1)}
# conv whose ReLU'd output is a tap.
VGG_TAPS = {"conv3_3": "conv3", "conv4_3": "conv4", "conv5_3": "conv5"}


@register_model("vgg16", kind="backbone", init_weights=IMAGENET_FILE)
class VGG16(Backbone):
    """Dilated VGG16 (DeepLab-LargeFOV), output stride 8, 20,483,904 parameters.

    Layout: 3x3 convs with bias, each followed by ReLU; max pools (k3, p1) ``pool1``-``pool3`` with stride 2 and
    ``pool4`` with stride 1; ``conv5_*`` dilation 2; ``fc6`` 3x3 512->1024 with dilation ``fc6_dilation`` (1 for
    the PSA classifier and single-stage, 4 for PSA's AffinityNet) + ReLU; ``drop6`` Dropout2d(0.5); ``fc7`` 1x1
    1024->1024 + ReLU. (The references' unused ``pool5``/``pool5a`` are left out; they have no parameters.)

    Taps (all after ReLU):
        ``conv3``: ReLU(conv3_3), before ``pool3``, 256 ch, stride 4 (single-stage).
        ``conv4``: ReLU(conv4_3), before ``pool4``, 512 ch, stride 8 (PSA AffinityNet).
        ``conv5``: ReLU(conv5_3), 512 ch, stride 8 (PSA AffinityNet).
        ``conv6`` = ``out``: ReLU(fc7), PSA's ``conv5fc``, 1024 ch, stride 8.

    Reference freezing: no BN exists; PSA freezes ``conv1_1, conv1_2, conv2_1, conv2_2`` (the default here);
    1-stage-wseg freezes only ``conv1_1, conv1_2`` (pass ``frozen=("conv1_1", "conv1_2")``).
    """

    name = "vgg16"
    out_channels = {"conv3": 256, "conv4": 512, "conv5": 512, "conv6": 1024, "out": 1024}
    strides = {"conv3": 4, "conv4": 8, "conv5": 8, "conv6": 8, "out": 8}
    default_frozen = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
    default_freeze_bn = True

    def __init__(self, *, fc6_dilation: int = 1, freeze_bn: Optional[bool] = None,
                 frozen: Optional[Sequence[str]] = None):
        super().__init__(freeze_bn=freeze_bn, frozen=frozen)
        if fc6_dilation < 1:
            raise ValueError(f"vgg16: fc6_dilation must be >= 1, got {fc6_dilation}")
        self.fc6_dilation = fc6_dilation
        for name, cin, cout, dilation in VGG_CONVS:
            self.add_module(name, nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation))
            if name in VGG_POOLS:
                pool, stride = VGG_POOLS[name]
                self.add_module(pool, nn.MaxPool2d(kernel_size=3, stride=stride, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.drop6 = nn.Dropout2d(0.5)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self._apply_freezing()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised BGR -> taps; stride-8 maps are ceil(ceil(ceil(H/2)/2)/2) high."""
        self.check_input(x)
        taps = {}
        for name, *_ in VGG_CONVS:
            x = F.relu(getattr(self, name)(x))
            if name in VGG_TAPS:
                taps[VGG_TAPS[name]] = x
            if name in VGG_POOLS:
                x = getattr(self, VGG_POOLS[name][0])(x)
        x = self.drop6(F.relu(self.fc6(x)))
        taps["conv6"] = taps["out"] = F.relu(self.fc7(x))
        return taps
