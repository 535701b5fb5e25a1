"""Building blocks of WS-FCN (Wang et al., TNNLS 2023): FCA, the flow alignment and SF2.

* :class:`FCA` ("Flexible Context Aggregation") replaces the single-stage ASPP on the deep features;
* :class:`AlignModule` upsamples the FCA output to the shallow features' grid with a learned flow
  (:func:`flow_warp`), replacing the single-stage's plain upsampling + skip projection + ``fuse``;
* :class:`SF2` ("Semantically consistent Feature Fusion") crosses shallow and aligned deep features, replacing GCI.

Attribute names follow the reference's state dict (``fca.fca3.conv1_2``, ``fca.ca.sharedMLP.0``, ``align1.flow_make``,
``sf2.bn2v``, ...) so that its released weights map onto them one to one (:mod:`wsss.models.single_stage_reference`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.single_stage_modules import FrozenStatsBatchNorm2d, reference_init

FCA_CHANNELS = 256
FCA_BRANCHES = ((1, 1), (3, 12), (5, 24), (7, 36))  # (kernel size, dilation) of fca1..fca4 (output stride 8)
ALIGN_CHANNELS = 128


class SeparableBranch(nn.Module):
    """One FCA branch (the reference's ``GCN_Module``): two linear separable paths, summed.

    Path 1: (k x 1) conv then (1 x k) conv; path 2: (1 x k) then (k x 1); all bias-free, dilated by ``d``, padded
    by ``d * (k - 1) / 2`` (size-preserving; the reference looks the padding up from ``d`` alone, which gives the
    same numbers for its four branches). ``bn`` exists only for the state dict: the reference defines it and never
    uses it (no BN, no ReLU in the forward).

    Shapes: (B, in_channels, h, w) -> (B, out_channels, h, w).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        tall = {"kernel_size": (kernel_size, 1), "padding": (pad, 0), "dilation": dilation, "bias": False}
        wide = {"kernel_size": (1, kernel_size), "padding": (0, pad), "dilation": dilation, "bias": False}
        self.conv1_1 = nn.Conv2d(in_channels, out_channels, **tall)
        self.conv1_2 = nn.Conv2d(out_channels, out_channels, **wide)
        self.bn = FrozenStatsBatchNorm2d(out_channels)  # unused, as in the reference
        self.conv2_1 = nn.Conv2d(in_channels, out_channels, **wide)
        self.conv2_2 = nn.Conv2d(out_channels, out_channels, **tall)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1_2(self.conv1_1(x)) + self.conv2_2(self.conv2_1(x))


class ChannelAttention(nn.Module):
    """``sigmoid(MLP(mean over space z) + MLP(max over space z))``; MLP = 1x1 conv C->C, ReLU, 1x1 conv C->C, no
    biases (reduction ratio 1). Shapes: (B, C, h, w) -> (B, C, 1, 1) in (0, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.sharedMLP = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(),  # reference name
                                       nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mlp = self.sharedMLP
        return torch.sigmoid(mlp(z.mean((2, 3), keepdim=True)) + mlp(z.amax((2, 3), keepdim=True)))


class SpatialAttention(nn.Module):
    """``sigmoid(conv3x3([mean over channels x; max over channels x]))``, conv 2->1, padding 1, no bias.
    Shapes: (B, C, h, w) -> (B, 1, h, w) in (0, 1)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)))


class FCA(nn.Module):
    """Flexible Context Aggregation: four separable dilated branches + image pooling, fused, with attention.

    ``z_i = fca_i(x) * ca(fca_i(x))`` for the branches (k, d) = (1, 1), (3, 12), (5, 24), (7, 36), one *shared*
    channel attention ``ca``; the image-pool branch is mean over space -> 1x1 conv -> BN -> ReLU, broadcast to
    (h, w). Concatenated 5 x 256 -> 1x1 conv (no bias) -> BN, **no ReLU** -> ``y * sa(y) + y`` (spatial attention)
    -> Dropout(0.5) (element-wise). Every BN keeps its statistics frozen at mean 0, variance 1 (the reference runs
    them in eval mode throughout; scale and shift train). Init: Kaiming-normal convs, BN 1 / 0.

    Known dead taps (reference behaviour, kept): on a 41 x 41 map (321 crop at stride 8) the taps of ``fca3`` at
    +-48 and of ``fca4`` at +-72 and +-108 only ever see zero padding, so they get exactly zero gradient and keep
    (decayed) random values; multiscale inference on 1024^2 pads (128^2 maps) does reach them.

    Shapes: (B, in_channels, h, w) -> (B, 256, h, w).
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention(FCA_CHANNELS)
        for i, (kernel_size, dilation) in enumerate(FCA_BRANCHES, start=1):
            self.add_module(f"fca{i}", SeparableBranch(in_channels, FCA_CHANNELS, kernel_size, dilation))
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                             nn.Conv2d(in_channels, FCA_CHANNELS, 1, bias=False),
                                             FrozenStatsBatchNorm2d(FCA_CHANNELS), nn.ReLU())
        self.conv1 = nn.Conv2d((len(FCA_BRANCHES) + 1) * FCA_CHANNELS, FCA_CHANNELS, 1, bias=False)
        self.bn1 = FrozenStatsBatchNorm2d(FCA_CHANNELS)
        self.dropout = nn.Dropout(0.5)
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [getattr(self, f"fca{i}")(x) for i in range(1, len(FCA_BRANCHES) + 1)]
        branches = [z * self.ca(z) for z in branches]
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        y = self.bn1(self.conv1(torch.cat(branches + [pooled], dim=1)))
        return self.dropout(y * self.sa(y) + y)


def flow_warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``features`` on the flow's grid shifted by the flow (bilinear, zero padding, align_corners=True).

    The base grid spans [-1, 1] in both directions with the flow's size (H, W), corners on corners, so a zero flow
    is bilinear upsampling with ``align_corners=True``. Offsets are ``flow[:, 0] / W`` in x and ``flow[:, 1] / H``
    in y, in normalised coordinates (one unit = (w - 1) / (2 W) feature pixels in x).

    Args:
        features: (B, C, h, w).
        flow: (B, 2, H, W), channel 0 x, channel 1 y.

    Returns:
        (B, C, H, W).
    """
    if features.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != features.shape[0]:
        raise ValueError(f"flow_warp: expected features (B, C, h, w) and flow (B, 2, H, W), got "
                         f"{tuple(features.shape)} and {tuple(flow.shape)}")
    height, width = flow.shape[-2:]
    # float32 throughout: in half precision the grid itself would be off by up to ~0.02 pixel at 81 points
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device)
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2): x, y
    grid = base.unsqueeze(0) + flow.float().permute(0, 2, 3, 1) / torch.tensor([width, height], device=flow.device)
    out = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(features.dtype)


class AlignModule(nn.Module):
    """Flow alignment (the reference's ``AlignModule(256, 128)``, used as ``align1``).

    ``low' = down_l(low)``, ``high' = down_h(high)`` bilinearly resized to the low size (align_corners=False), both
    1x1 convs without bias to ``width``; ``flow = flow_make([high'; low'])`` (3x3, padding 1, no bias, 2 channels);
    output = :func:`flow_warp` of the *original* ``high`` with that flow. PyTorch's default init (the reference
    calls none).

    Shapes: low (B, low_channels, H, W), high (B, high_channels, h, w) -> (B, high_channels, H, W).
    """

    def __init__(self, low_channels: int = 256, high_channels: int = 256, width: int = ALIGN_CHANNELS):
        super().__init__()
        self.down_h = nn.Conv2d(high_channels, width, 1, bias=False)
        self.down_l = nn.Conv2d(low_channels, width, 1, bias=False)
        self.flow_make = nn.Conv2d(2 * width, 2, 3, padding=1, bias=False)

    def flow(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The predicted flow (B, 2, H, W) on the low grid."""
        size = low.shape[-2:]
        high = F.interpolate(self.down_h(high), size=size, mode="bilinear", align_corners=False)
        return self.flow_make(torch.cat([high, self.down_l(low)], dim=1))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return flow_warp(high, self.flow(low, high))


class SF2(nn.Module):
    """Semantically consistent Feature Fusion (an F3Net-style cross-feature module), 8 conv-BN-ReLU blocks.

    With ``cbr_ks`` = ReLU(BN(3x3 conv with bias)), ``left`` the shallow and ``down`` the aligned deep features
    (bilinearly resized to ``left``, align_corners=False, if their sizes differ)::

        h1 = cbr_1h(left); h2 = cbr_2h(h1); v1 = cbr_1v(down); v2 = cbr_2v(v1); fuse = h2 * v2
        h4 = cbr_4h(cbr_3h(fuse) + h1);     v4 = cbr_4v(cbr_3v(fuse) + v1);     return h4, v4

    The BNs are ordinary (batch statistics in training). Init: Kaiming-normal (fan_in, ReLU), zero bias, BN 1 / 0.

    Shapes: left (B, left_channels, H, W), down (B, down_channels, h, w) -> two (B, width, H, W).
    """

    def __init__(self, left_channels: int = 256, down_channels: int = 256, width: int = 256):
        super().__init__()
        for side, cin in (("h", left_channels), ("v", down_channels)):
            for i in range(1, 5):
                self.add_module(f"conv{i}{side}", nn.Conv2d(cin if i == 1 else width, width, 3, padding=1))
                self.add_module(f"bn{i}{side}", nn.BatchNorm2d(width))
        reference_init(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)

    def _cbr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, f"bn{name}")(getattr(self, f"conv{name}")(x)))

    def forward(self, left: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if down.shape[-2:] != left.shape[-2:]:
            down = F.interpolate(down, size=left.shape[-2:], mode="bilinear", align_corners=False)
        h1 = self._cbr("1h", left)
        v1 = self._cbr("1v", down)
        fuse = self._cbr("2h", h1) * self._cbr("2v", v1)
        h4 = self._cbr("4h", self._cbr("3h", fuse) + h1)
        v4 = self._cbr("4v", self._cbr("3v", fuse) + v1)
        return h4, v4
