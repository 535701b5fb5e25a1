"""IRN's inter-pixel relation network (``net/resnet50_irn.py``) and its training loss.

The backbone is frozen whole (IRN detaches every stage output and keeps it in eval mode); on ResNet-50 it holds the
*ImageNet* weights at output stride 16 without dilation, and its five stage outputs feed two heads (every conv
1x1, PyTorch's default init, bilinear resizing with ``align_corners=False``, top-left crops):

* class boundaries: ``fc_edge1..5`` = conv -> 32 (no bias), GN(4, 32), resize to stride 4, ReLU; ``fc_edge6`` =
  conv 160 -> 1 with bias on their concatenation: the boundary logits ``B`` (B, 1, h, w), stride 4;
* displacement: ``fc_dp1`` (64, GN 8), ``fc_dp2`` (128, GN 16) at stride 4, ``fc_dp3..5`` (256, GN 16) at stride
  8, ``fc_dp6`` (768 -> 256, GN 16, x2), ``fc_dp7`` = conv 448 -> 256, GN(16, 256), ReLU, conv 256 -> 2 (no bias),
  ``MeanShift`` (identity in training, minus ``running_mean`` in eval mode): ``D`` (B, 2, h, w), channel 0 rows.

Two learning-rate groups: ``fc_edge*`` 1x and ``fc_dp*`` 10x, both with weight decay (GN and biases included).
On ``tiny`` the five stages are ``stem+stage2`` (s2), ``stage3`` (s4), ``stage4``, ``stage5``, ``stage6`` (s8), each
resized by its stride ratio; the tiny backbone has no ImageNet weights, so initialise it from a toy CAM checkpoint
(:func:`wsss.models.weights.load_backbone_init`).

IRN's ``res50_irn.pth`` (1,056 keys) loads strictly through :func:`wsss.models.weights.load_network`: aliases
(``stage*``, ``backbone.<i>``, ``edge_layers``, ``dp_layers``, ``mean_shift``) are checked equal to their source,
``path_indices0..19`` and ``disp_target`` are checked against the radius-10, 128x128 ``PathIndex`` and dropped.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.train_module import TrainModule
from wsss.errors import UserError
from wsss.models.irn_cam import (RESNET_PREFIX, check_reference_backbone, export_reference, import_reference,
                                 keep_bn_statistics, reference_aliases)
from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model
from wsss.ops.affinity import source_size
from wsss.ops.irn import LABEL_STRIDE, downsample_ir_label, flip_averaged_boundary, irn_losses, irn_pair_labels
from wsss.ops.path_index import TRAIN_RADIUS, boundary_affinity, irn_directions, path_groups

PAD_SIZE = 512  # EdgeDisplacement's crop_size: inference pads to 512x512
# resnet50_irn.Net: stage1 = (conv1, bn1, relu, maxpool), stage2..5 = layer1..4; backbone = [stage1..5].
IRN_STAGES = (((0, "conv1"), (1, "bn1")), ((0, "layer1"),), ((0, "layer2"),), ((0, "layer3"),), ((0, "layer4"),))
# backbone -> (channels, stride) of the five stage outputs
STAGE_SHAPES = {"resnet50": ((64, 4), (256, 4), (512, 8), (1024, 16), (2048, 16)),
                "tiny": ((32, 2), (48, 4), (64, 8), (96, 8), (128, 8))}
EDGE = ("fc_edge1", "fc_edge2", "fc_edge3", "fc_edge4", "fc_edge5", "fc_edge6")
DP = ("fc_dp1", "fc_dp2", "fc_dp3", "fc_dp4", "fc_dp5", "fc_dp6", "fc_dp7")
HEAD_ALIASES = {**{f"edge_layers.{i}.": f"{n}." for i, n in enumerate(EDGE)},
                **{f"dp_layers.{i}.": f"{n}." for i, n in enumerate(DP)}, "mean_shift.": "fc_dp7.4."}


class Rescale(nn.Module):
    """Bilinear resize by ``scale`` (``align_corners=False``) to ``ceil(n * scale)``; the identity at 1."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x
        size = [math.ceil(n * self.scale) for n in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MeanShift(nn.Module):
    """IRN's displacement offset: identity in training, ``x - running_mean`` (per channel) in eval mode."""

    def __init__(self, channels: int = 2):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x - self.running_mean.view(1, -1, 1, 1)


def _branch(cin: int, cout: int, groups: int, scale: float) -> nn.Sequential:
    """conv 1x1 (no bias), GroupNorm, resize, ReLU (IRN's order); parameters at indices 0 and 1."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(groups, cout), Rescale(scale),
                         nn.ReLU(inplace=True))


def _crop_cat(maps: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    h, w = like.shape[-2:]
    return torch.cat([m[..., :h, :w] for m in maps], dim=1)


def _stage_outputs(net: "IrnNet", x: torch.Tensor) -> list[torch.Tensor]:
    """The five backbone stage outputs (IRN's x1..x5), without gradient."""
    bb = net.backbone
    bb.check_input(x)
    with torch.no_grad():
        if net.backbone_name == "resnet50":
            x1 = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
            stages = (bb.layer1, bb.layer2, bb.layer3, bb.layer4)
        else:
            x1 = bb.stage2(bb.stem(x))
            stages = (bb.stage3, bb.stage4, bb.stage5, bb.stage6)
        outs = [x1]
        for stage in stages:
            outs.append(stage(outs[-1]))
    return outs


@register_model("irn", backbones=tuple(STAGE_SHAPES), released={"resnet50": "res50_irn.pth"})
class IrnNet(BackboneNetwork):
    """IRN's inter-pixel relation network: boundary and displacement heads on a frozen backbone (stride 4).

    Args:
        backbone: ``resnet50`` (IRN, ImageNet weights) or ``tiny`` (CPU tests, toy data).
        backbone_kwargs: extra keyword arguments for the backbone.
    """

    new_modules = EDGE + DP
    backbone_defaults = {"resnet50": {"output_stride": 16, "dilate": False}}

    def __init__(self, *, backbone: str = "resnet50", backbone_kwargs: Optional[dict] = None):
        if backbone not in STAGE_SHAPES:
            raise UserError(f"irn: backbone must be one of {', '.join(STAGE_SHAPES)}, got {backbone!r}")
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        self.backbone.requires_grad_(False)
        shapes = STAGE_SHAPES[backbone]
        for name, (cin, stride) in zip(EDGE, shapes):
            self.add_module(name, _branch(cin, 32, 4, stride / 4))
        self.fc_edge6 = nn.Conv2d(160, 1, 1, bias=True)
        for name, (cin, stride), cout, target in zip(DP, shapes, (64, 128, 256, 256, 256), (4, 4, 8, 8, 8)):
            self.add_module(name, _branch(cin, cout, 8 if cout == 64 else 16, stride / target))
        self.fc_dp6 = _branch(768, 256, 16, 2)
        self.fc_dp7 = nn.Sequential(nn.Conv2d(448, 256, 1, bias=False), nn.GroupNorm(16, 256), nn.ReLU(inplace=True),
                                    nn.Conv2d(256, 2, 1, bias=False), MeanShift(2))
        self.train(self.training)

    @property
    def mean_shift(self) -> MeanShift:
        """The ``MeanShift`` module (IRN's ``mean_shift``, also ``fc_dp7[4]``)."""
        return self.fc_dp7[4]

    def train(self, mode: bool = True) -> "IrnNet":
        """``nn.Module.train`` for the heads; the backbone always in eval mode."""
        super().train(mode)
        self.backbone.eval()
        keep_bn_statistics(self.backbone)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised.

        Returns:
            ``boundary``: (B, 1, h, w) boundary logits; ``displacement``: (B, 2, h, w) (minus the mean shift in eval
            mode); ``h, w = ceil(H / 4), ceil(W / 4)`` on ResNet-50.
        """
        x1, x2, x3, x4, x5 = _stage_outputs(self, x)
        edges = [getattr(self, n)(t) for n, t in zip(EDGE, (x1, x2, x3, x4, x5))]
        boundary = self.fc_edge6(_crop_cat(edges, edges[1]))
        dp1, dp2, dp3, dp4, dp5 = (getattr(self, n)(t) for n, t in zip(DP, (x1, x2, x3, x4, x5)))
        dp6 = self.fc_dp6(_crop_cat([dp3, dp4, dp5], dp3))
        displacement = self.fc_dp7(_crop_cat([dp1, dp2, dp6], dp2))
        return {"boundary": boundary, "displacement": displacement}

    @torch.no_grad()
    def infer(self, image: torch.Tensor, pad_size: int = PAD_SIZE) -> dict[str, torch.Tensor]:
        """IRN's ``EdgeDisplacement`` on one image: ``[image, flip]`` zero-padded bottom/right to ``pad_size``
        (GN statistics see the padding, as in IRN), boundary flip-averaged in logit space, ``D`` of the image.

        Args:
            image: (3, H, W) normalised; a side above ``pad_size`` pads to that side instead (IRN breaks there).
        Returns:
            ``boundary`` (h, w) in [0, 1] and ``displacement`` (2, h, w), ``h, w = ceil(H / 4), ceil(W / 4)``.
        """
        if image.ndim != 3:
            raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        pair = torch.stack([image, image.flip(-1)])
        pair = F.pad(pair, (0, max(pad_size, width) - width, 0, max(pad_size, height) - height))
        out = self(pair)
        size = (-(-height // LABEL_STRIDE), -(-width // LABEL_STRIDE))
        return {"boundary": flip_averaged_boundary(out["boundary"], size),
                "displacement": out["displacement"][0, :, :size[0], :size[1]]}

    @torch.no_grad()
    def estimate_mean_shift(self, batches: Iterable[torch.Tensor]) -> torch.Tensor:
        """IRN's mean-shift estimate: with the offset zeroed and the network in eval mode, the mean over the
        batches of each batch's mean ``D`` (over images and pixels, padding included); stored and returned, (2,).
        """
        self.mean_shift.running_mean.zero_()
        was_training = self.training
        self.eval()
        means = [self(x)["displacement"].mean(dim=(0, 2, 3)) for x in batches]
        self.train(was_training)
        if not means:
            raise ValueError("estimate_mean_shift: no batches")
        self.mean_shift.running_mean.copy_(torch.stack(means).mean(0))
        return self.mean_shift.running_mean.clone()

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """IRN's two groups: ``fc_edge*`` (lr, wd) and ``fc_dp*`` (10 lr, wd)."""
        return [{"name": "edge_layers", "params": [p for n in EDGE for p in getattr(self, n).parameters()],
                 "lr": lr, "lr_mult": 1.0, "weight_decay": weight_decay},
                {"name": "dp_layers", "params": [p for n in DP for p in getattr(self, n).parameters()],
                 "lr": 10 * lr, "lr_mult": 10.0, "weight_decay": weight_decay}]

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` resnet50 from the ``resnet50.*`` keys of IRN's file."""
        return {"backbone": "resnet50"} if f"{RESNET_PREFIX}conv1.weight" in state_dict else {}

    def import_original_state_dict(self, state_dict: dict) -> dict:
        """``res50_irn.pth`` -> ours (see the module docstring)."""
        check_reference_backbone(self)
        return import_reference(state_dict, reference_aliases(IRN_STAGES, HEAD_ALIASES), loss_buffer_shapes(),
                                "res50_irn state dict")

    def export_original_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights in IRN's layout with every alias, without the loss-only index buffers (1,035 keys)."""
        check_reference_backbone(self)
        return export_reference(self.state_dict(), reference_aliases(IRN_STAGES, HEAD_ALIASES))


def loss_buffer_shapes(radius: int = TRAIN_RADIUS, grid: int = PAD_SIZE // LABEL_STRIDE) -> dict[str, tuple]:
    """Shapes of the loss-only buffers in ``res50_irn.pth``: ``path_indices{g}`` (count, length, N_src) and
    ``disp_target`` (1, 2, P, 1), for IRN's radius 10 on the 128x128 grid."""
    n_src = math.prod(source_size(grid, grid, radius))
    shapes = {f"path_indices{g}": (count, length, n_src) for g, (length, count) in enumerate(path_groups(radius))}
    return {**shapes, "disp_target": (1, 2, len(irn_directions(radius)), 1)}


class IrnTrainModule(TrainModule):
    """IRN's training loss (``AffinityDisplacementLoss`` + ``train_irn``) on a batch.

    Batch keys:
        ``image``: (B, 3, H, W) float, normalised; ``H`` and ``W`` multiples of 4 (IRN: 512 crops).
        ``ir_label``: (B, H, W) integer IR labels of the same crop: 0 = background, 1..C, 255 = ignore (and crop
        padding). Sampled at pixel ``4i + 2`` onto the network's stride-4 grid.

    Returns ``{"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg", "n_bg_pos", "n_fg_pos", "n_neg"}``.
    """

    def __init__(self, network: nn.Module, radius: int = TRAIN_RADIUS):
        super().__init__(network)
        self.radius = radius

    def forward(self, batch: dict) -> dict:
        out = self.network(batch["image"])
        label = downsample_ir_label(batch["ir_label"].to(out["boundary"].device, torch.int64))
        if label.shape[-2:] != out["boundary"].shape[-2:]:
            raise ValueError(f"ir_label grid {tuple(label.shape[-2:])} differs from the network's "
                             f"{tuple(out['boundary'].shape[-2:])}")
        aff = boundary_affinity(torch.sigmoid(out["boundary"][:, 0]), self.radius)
        labels = irn_pair_labels(label, self.radius)
        losses = irn_losses(aff, out["displacement"], labels, self.radius)
        return {**losses, **{f"n_{k}": v.sum() for k, v in labels.items()}}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict:
        """The first image's boundary probability as a grey (3, H, W) map in [0, 1] (TensorBoard)."""
        logits = self.network(batch["image"][:1])["boundary"]
        b = F.interpolate(torch.sigmoid(logits), size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
        return {"boundary": b[0].expand(3, -1, -1).clamp(0, 1)}
