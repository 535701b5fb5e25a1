"""DeepLab-v2: ASPP (rates 6/12/18/24, branch outputs summed) with multi-scale inputs (MSC), deeplab-pytorch's.

::

    x ------------------------------> base -> logits_full (B, C, h, w)       base = backbone -> aspp
    x bilinear x0.5  (scale_factor) -> base -> logits_s0.5                    (stride 8, h per resnet101_caffe)
    x bilinear x0.75 (scale_factor) -> base -> logits_s0.75
    logits = max(logits_full, up(logits_s0.5), up(logits_s0.75))   (up = bilinear to (h, w), align_corners False)

``forward`` returns all four maps in training and in eval mode (the reference's eval returns only the max, which
is ``logits``); with ``msc_scales=()`` it returns ``logits`` alone. The training loss of the reference is the sum
of the cross-entropies of all four maps, each against the labels resized to its own size
(:func:`wsss.ops.seg_loss.segmentation_loss`).

State dict: ``backbone.*`` (the :mod:`wsss.models.resnet_caffe` keys) and ``aspp.c{0..3}.{weight,bias}``. The
deeplab-pytorch files map onto it by one explicit rule (:meth:`DeepLabV2.import_original_state_dict`): a prefix
``base.`` on every key (the trained checkpoints, e.g. ``deeplabv2_resnet101_msc-vocaug-20000.pth``) is removed,
then every non-``aspp`` key moves under ``backbone.``; :func:`wsss.models.weights.load_network` then loads
strictly. The initialisations (``deeplabv1_resnet101-coco.pth``: backbone keys plus a 91-way ``fc``) go into the
backbone through :func:`wsss.models.weights.load_backbone_init`, which drops exactly ``fc.weight`` and ``fc.bias``
(logged) and leaves the ASPP at its N(0, 0.01) initialisation, as deeplab-pytorch does.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.network import BACKBONE_PREFIX, BackboneNetwork
from wsss.models.registry import register_model
from wsss.models.resnet_caffe import RESNET101_BLOCKS
from wsss.process import LOG

ASPP_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)
ASPP_INIT_STD = 0.01
BASE_PREFIX = "base."
CAFFE_KEY = "layer1.conv1.conv.weight"


class ASPPv2(nn.Module):
    """Parallel 3x3 convs ``c0``.. with bias, dilation = padding = rate, whose outputs are **summed**.

    Initialisation as deeplab-pytorch: weights ~ N(0, 0.01), biases 0.

    Shapes: (B, in, h, w) -> (B, C, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        if not self.rates or min(self.rates) < 1:
            raise ValueError(f"ASPP rates must be >= 1 and at least one, got {tuple(rates)}")
        for i, rate in enumerate(self.rates):
            conv = nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True)
            nn.init.normal_(conv.weight, mean=0.0, std=ASPP_INIT_STD)
            nn.init.zeros_(conv.bias)
            self.add_module(f"c{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for conv in self.children():
            out = conv(x) if out is None else out + conv(x)
        return out


def msc_key(scale: float) -> str:
    """Output name of one extra MSC scale: ``0.5 -> "logits_s0.5"``."""
    return f"logits_s{scale:g}"


def merge_max(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The MSC merge: each map bilinearly resized (align_corners False) to the first one's size, element-wise max.

    Args:
        maps: (B, C, h_i, w_i) logits; the first is the full-scale output.

    Returns:
        (B, C, h_0, w_0).
    """
    if not maps:
        raise ValueError("merge_max: no maps")
    size = maps[0].shape[-2:]
    out = maps[0]
    for m in maps[1:]:
        if m.shape[:2] != out.shape[:2]:
            raise ValueError(f"merge_max: maps {tuple(m.shape)} and {tuple(out.shape)} differ in batch or classes")
        if m.shape[-2:] != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        out = torch.maximum(out, m)
    return out


def strip_base_prefix(state_dict: dict, source: str = "state_dict") -> dict:
    """The explicit ``base.`` rule: removed when every key has it, kept off when none has it, else an error."""
    prefixed = [k.startswith(BASE_PREFIX) for k in state_dict]
    if state_dict and all(prefixed):
        return {k[len(BASE_PREFIX):]: v for k, v in state_dict.items()}
    if any(prefixed):
        odd = next(k for k, p in zip(state_dict, prefixed) if not p)
        raise UserError(f"{source}: some keys have the deeplab-pytorch prefix 'base.' and some do not "
                        f"(e.g. {odd!r}); expected all or none")
    return dict(state_dict)


@register_model("deeplabv2_resnet101", backbones=("resnet101_caffe", "tiny"),
                released={"resnet101_caffe": "deeplabv2_resnet101_msc-vocaug-20000.pth"}, family="seg")
class DeepLabV2(BackboneNetwork):
    """DeepLab-v2 ResNet-101 with ASPP and MSC (deeplab-pytorch ``DeepLabV2_ResNet101_MSC``).

    Args:
        num_classes: output channels including the background (21 on VOC).
        msc_scales: extra input scales of MSC; () = the plain network.
        aspp_rates: dilation rates of the ASPP branches.
        backbone: ``resnet101_caffe`` (the reference) or ``tiny`` (CPU tests).
        blocks: bottlenecks per layer of ``resnet101_caffe`` (default ResNet-101's (3, 4, 23, 3); fewer for tests).
        backbone_kwargs: more backbone arguments (``freeze_bn``, ``frozen``).

    Input: BGR, Caffe mean subtracted (``normalization``). BN frozen (eval, no gradient) by default. Learning-rate
    groups: backbone convs 1x (wd), ASPP weights 10x (wd), ASPP biases 20x (no wd); BN in no group.
    """

    new_modules = ("aspp",)

    def __init__(self, *, num_classes: int = 21, msc_scales: Sequence[float] = MSC_SCALES,
                 aspp_rates: Sequence[int] = ASPP_RATES, backbone: str = "resnet101_caffe",
                 blocks: Optional[Sequence[int]] = None, backbone_kwargs: Optional[dict] = None):
        kwargs = dict(backbone_kwargs or {})
        if blocks is not None:
            if backbone != "resnet101_caffe":
                raise UserError(f"deeplabv2_resnet101: blocks only applies to resnet101_caffe, not {backbone}")
            kwargs["blocks"] = tuple(blocks)
        super().__init__(backbone=backbone, backbone_kwargs=kwargs)
        if num_classes < 2:
            raise ValueError(f"deeplabv2_resnet101: num_classes counts the background, >= 2, got {num_classes}")
        self.msc_scales = tuple(float(s) for s in msc_scales)
        if any(s <= 0 for s in self.msc_scales):
            raise ValueError(f"deeplabv2_resnet101: every MSC scale must be > 0, got {self.msc_scales}")
        self.num_classes = num_classes
        self.aspp = ASPPv2(self.backbone.out_channels["out"], num_classes, aspp_rates)

    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The single-scale network: (B, 3, H, W) -> (B, C, h, w) at stride 8."""
        return self.aspp(self.backbone(x)["out"])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised BGR.

        Returns:
            ``logits`` (B, C, h, w): the MSC max (or the plain output without MSC); with MSC also
            ``logits_full`` (B, C, h, w) and one ``logits_s{scale}`` per extra scale at its own size
            (e.g. 321 x 321 -> 41, 21 and 31 for scales 0.5 and 0.75).
        """
        full = self.base_logits(x)
        if not self.msc_scales:
            return {"logits": full}
        outputs = {"logits_full": full}
        for scale in self.msc_scales:
            scaled = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            outputs[msc_key(scale)] = self.base_logits(scaled)
        outputs["logits"] = merge_max(list(outputs.values()))
        return outputs

    def import_original_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """deeplab-pytorch keys (with or without ``base.``) -> ours: ``base.`` removed, backbone keys under
        ``backbone.``, ``aspp.*`` kept."""
        stripped = strip_base_prefix(state_dict)
        if stripped.keys() != state_dict.keys():
            LOG.info("deeplabv2_resnet101: removed the deeplab-pytorch prefix 'base.' of all %d keys", len(stripped))
        return super().import_original_state_dict(stripped)

    @staticmethod
    def original_keys(state_dict: dict) -> dict:
        """Our keys -> deeplab-pytorch's trained-checkpoint keys (``base.`` + flat layout); values untouched."""
        return {BASE_PREFIX + (k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k): v
                for k, v in state_dict.items()}

    def export_original_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights in deeplab-pytorch's checkpoint layout (``base.layer1...``, ``base.aspp.c0...``), on CPU."""
        return self.original_keys({k: v.detach().cpu() for k, v in self.state_dict().items()})

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``num_classes`` from ``aspp.c0.weight``; the backbone, and for the Caffe one ``blocks`` (when not
        ResNet-101's), from the key names."""
        sd = strip_base_prefix(state_dict)
        kwargs = super().original_model_kwargs(sd)
        if CAFFE_KEY in sd:
            kwargs["backbone"] = "resnet101_caffe"
            counts = tuple(len({k.split(".")[1] for k in sd if k.startswith(layer + ".block")})
                           for layer in ("layer2", "layer3", "layer4", "layer5"))
            if counts != RESNET101_BLOCKS and min(counts) > 0:
                kwargs["blocks"] = counts
        if "aspp.c0.weight" in sd:
            kwargs["num_classes"] = int(sd["aspp.c0.weight"].shape[0])
        return kwargs
