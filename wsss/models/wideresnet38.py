"""WideResNet-38 ("model A1" of Wu et al.), the PSA / SEAM / single-stage backbone at output stride 8.

Pre-activation residual blocks without biases. The ImageNet model had strides in b5 and b6 (output stride 32);
the references replace them by dilation 2 in b5 and 4 in b6/b7, with the same weights. Module and parameter names
are those of the converted ImageNet file ``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth`` (``conv1a.weight``,
``b4_3.bn_branch2a.running_mean``, ...), so it loads strictly; the file has no ``num_batches_tracked`` entries,
which :func:`wsss.models.weights.load_state_dict_strict` accepts.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import Backbone
from wsss.models.registry import register_model

IMAGENET_FILE = "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"

# Basic ("type B") blocks: name, in, mid, out, stride, first dilation, dilation.
BASIC_BLOCKS = (
    ("b2", 64, 128, 128, 2, 1, 1), ("b2_1", 128, 128, 128, 1, 1, 1), ("b2_2", 128, 128, 128, 1, 1, 1),
    ("b3", 128, 256, 256, 2, 1, 1), ("b3_1", 256, 256, 256, 1, 1, 1), ("b3_2", 256, 256, 256, 1, 1, 1),
    ("b4", 256, 512, 512, 2, 1, 1), ("b4_1", 512, 512, 512, 1, 1, 1), ("b4_2", 512, 512, 512, 1, 1, 1),
    ("b4_3", 512, 512, 512, 1, 1, 1), ("b4_4", 512, 512, 512, 1, 1, 1), ("b4_5", 512, 512, 512, 1, 1, 1),
    ("b5", 512, 512, 1024, 1, 1, 2), ("b5_1", 1024, 512, 1024, 1, 2, 2), ("b5_2", 1024, 512, 1024, 1, 2, 2),
)
# Bottleneck blocks: name, in, out, dilation, Dropout2d probability.
BOTTLENECK_BLOCKS = (("b6", 1024, 2048, 4, 0.3), ("b7", 2048, 4096, 4, 0.5))


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU, 3x3 (stride, first dilation), BN-ReLU, 3x3 (dilation), plus shortcut.

    The shortcut is a 1x1 conv ``conv_branch1`` on the BN-ReLU'd input when the shape changes, else the raw input.
    ``forward`` returns ``(output, bn_relu_input)``; the second is the tap the networks use.
    """

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, first_dilation: int = 1, dilation: int = 1):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, mid, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid)
        self.conv_branch2b1 = nn.Conv2d(mid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = None
        if cin != cout or stride != 1:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, in, H, W) -> ((B, out, H/s, W/s), (B, in, H, W))."""
        x_bn_relu = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(x_bn_relu)
        branch = self.conv_branch2a(x_bn_relu)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch, x_bn_relu


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU, 1x1 in->out/4, BN-ReLU-Dropout2d, 3x3 (dilation) ->out/2,
    BN-ReLU-Dropout2d, 1x1 ->out; plus a 1x1 shortcut ``conv_branch1`` on the BN-ReLU'd input (always present).

    ``forward`` returns ``(output, bn_relu_input)``.
    """

    def __init__(self, cin: int, cout: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, in, H, W) -> ((B, out, H, W), (B, in, H, W))."""
        x_bn_relu = F.relu(self.bn_branch2a(x))
        branch = self.conv_branch2a(x_bn_relu)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return self.conv_branch1(x_bn_relu) + branch, x_bn_relu


@register_model("wideresnet38", kind="backbone", init_weights=IMAGENET_FILE)
class WideResNet38(Backbone):
    """WideResNet-38 (ResNet-38 "model A1"), output stride 8, 105,070,912 parameters.

    Layout: ``conv1a`` 3x3 3->64; ``b2``..``b2_2`` (128 ch, s2); ``b3``..``b3_2`` (256, s4); ``b4``..``b4_5``
    (512, s8); ``b5``..``b5_2`` (1024, dilation 2); bottlenecks ``b6`` (2048, dilation 4, Dropout2d 0.3) and ``b7``
    (4096, dilation 4, Dropout2d 0.5); ``bn7`` + ReLU.

    Taps:
        ``conv3``: output of ``b3_2``, the raw residual sum (no BN/ReLU), 256 ch, stride 4 (single-stage, WS-FCN).
        ``conv4``: ReLU(b5.bn_branch2a(b4_5 output)), the BN-ReLU'd input of ``b5``, 512 ch, stride 8 (PSA).
        ``conv5``: ReLU(b6.bn_branch2a(b5_2 output)), the BN-ReLU'd input of ``b6``, 1024 ch, stride 8 (PSA).
        ``conv6`` = ``out``: ReLU(bn7(b7 output)), 4096 ch, stride 8.

    Reference freezing (PSA cls/aff, SEAM, single-stage, WS-FCN): every BN frozen (eval mode, no gradient) and
    ``conv1a, b2, b2_1, b2_2`` frozen. Dropout stays active in training mode.
    """

    name = "wideresnet38"
    out_channels = {"conv3": 256, "conv4": 512, "conv5": 1024, "conv6": 4096, "out": 4096}
    strides = {"conv3": 4, "conv4": 8, "conv5": 8, "conv6": 8, "out": 8}
    default_frozen = ("conv1a", "b2", "b2_1", "b2_2")
    default_freeze_bn = True
    init_drop = ("linear1000.*",)
    checkpoint_blocks = True  # each of b2..b7 (see Backbone.run_block)

    def __init__(self, *, freeze_bn: Optional[bool] = None, frozen: Optional[Sequence[str]] = None):
        super().__init__(freeze_bn=freeze_bn, frozen=frozen)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        for name, cin, mid, cout, stride, first_dilation, dilation in BASIC_BLOCKS:
            self.add_module(name, PreActBlock(cin, mid, cout, stride, first_dilation, dilation))
        for name, cin, cout, dilation, dropout in BOTTLENECK_BLOCKS:
            self.add_module(name, PreActBottleneck(cin, cout, dilation, dropout))
        self.bn7 = nn.BatchNorm2d(4096)
        self._apply_freezing()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised RGB -> taps; stride-8 maps are ceil(ceil(ceil(H/2)/2)/2) high."""
        self.check_input(x)
        x = self.conv1a(x)
        taps = {}
        for name, *_ in BASIC_BLOCKS:
            x, x_bn_relu = self.run_block(getattr(self, name), x)
            if name == "b5":
                taps["conv4"] = x_bn_relu
            elif name == "b3_2":
                taps["conv3"] = x
        x, taps["conv5"] = self.run_block(self.b6, x)
        x, _ = self.run_block(self.b7, x)
        taps["conv6"] = taps["out"] = F.relu(self.bn7(x))
        return {k: taps[k] for k in ("conv3", "conv4", "conv5", "conv6", "out")}
