"""IRN's CAM classifier (``net/resnet50_cam.py``) and the key layout of IRN's released state dicts.

``irn_cam`` on ``resnet50``: torchvision ResNet-50 at output stride 16 *without* dilation (strides 2, 2, 2, 1),
``classifier`` = 1x1 conv 2048 -> C without bias and with PyTorch's default init, no dropout; logits =
``classifier(global average pool)``, CAMs = the same conv on the features. In training ``conv1``/``bn1``/
``layer1``/``layer2`` are frozen (IRN's detach after ``layer2``), every BatchNorm normalises with its running
statistics (IRN's ``FixedBatchNorm``) while the BN scales/shifts of ``layer3``/``layer4`` train, weight decay
included. Two learning-rate groups: backbone 1x, classifier 10x, both with weight decay. On ``tiny`` (toy data,
no ImageNet statistics) the backbone keeps its own defaults (nothing frozen, BatchNorm trains).

Why not ``cam`` with backbone arguments: ``cam`` has Dropout2d(0.5), a Xavier-initialised ``fc8``, frozen BN
affine parameters on ResNets and four groups with bias groups free of weight decay; none of that is IRN's.

IRN's files (``res50_cam.pth.pth``, ``res50_irn.pth``) hold the backbone as ``resnet50.<torchvision name>`` plus
the same tensors again under IRN's ``stage*`` and ``backbone.<i>`` containers (and the heads under ``newly_added``,
``edge_layers``, ``dp_layers``, ``mean_shift``). :func:`import_reference` checks every copy of a tensor equal and
keeps one, then maps ``resnet50.`` to our ``backbone.``; :func:`export_reference` writes the full layout back.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.network import BACKBONE_PREFIX, BackboneNetwork
from wsss.models.registry import register_model

RESNET_PREFIX = "resnet50."
Stages = tuple[tuple[tuple[int, str], ...], ...]  # per IRN stage: (index in the stage, torchvision module)
# resnet50_cam.Net: stage1 = (conv1, bn1, relu, maxpool, layer1), stage2..4 = layer2..4; backbone = [stage1..4].
CAM_STAGES: Stages = (((0, "conv1"), (1, "bn1"), (4, "layer1")), ((0, "layer2"),), ((0, "layer3"),),
                      ((0, "layer4"),))
_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def reference_aliases(stages: Stages, heads: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """``(alias prefix, source prefix)`` of every alias container of an IRN state dict (both file key prefixes)."""
    out = []
    for i, stage in enumerate(stages):
        for index, name in stage:
            for alias in (f"stage{i + 1}.{index}.", f"backbone.{i}.{index}."):
                out.append((alias, f"{RESNET_PREFIX}{name}."))
    return tuple(out) + tuple(heads.items())


def import_reference(state_dict: dict, aliases, drop_shapes: dict, source: str) -> dict:
    """IRN's flat layout -> ours: every copy of one tensor (source and aliases) checked equal and kept once,
    loss-only buffers checked for their shape and dropped, ``resnet50.*`` -> ``backbone.*``. Key names that fit
    nothing are passed on, so that strict loading names them.

    Raises:
        UserError: naming two copies of one tensor that differ, or a mis-shaped loss buffer.
    """
    kept: dict[str, tuple[str, torch.Tensor]] = {}  # source key -> (first file key seen, tensor)
    for key, value in state_dict.items():
        if key in drop_shapes:
            if tuple(value.shape) != tuple(drop_shapes[key]):
                raise UserError(f"{source}: {key} has shape {tuple(value.shape)}, expected {drop_shapes[key]}")
            continue
        match = next(((a, s) for a, s in aliases if key.startswith(a)), None)
        origin = key if match is None else match[1] + key[len(match[0]):]
        if origin not in kept:
            kept[origin] = (key, value)
            continue
        first, seen = kept[origin]
        if seen.shape != value.shape or not torch.equal(seen, value):
            raise UserError(f"{source}: {key} differs from {first} (one tensor in IRN)")
    return {(BACKBONE_PREFIX + k[len(RESNET_PREFIX):] if k.startswith(RESNET_PREFIX) else k): v
            for k, (_, v) in kept.items()}


def export_reference(state_dict: dict, aliases) -> dict[str, torch.Tensor]:
    """Our state dict -> IRN's flat layout with every alias (tensors shared), detached on the CPU."""
    flat = {(RESNET_PREFIX + k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k): v.detach().cpu()
            for k, v in state_dict.items()}
    out = dict(flat)
    for alias, origin in aliases:
        out.update({alias + k[len(origin):]: v for k, v in flat.items() if k.startswith(origin)})
    return out


def check_reference_backbone(network: BackboneNetwork) -> None:
    """IRN's layout exists for ResNet-50 only."""
    if network.backbone_name != "resnet50":
        raise UserError(f"IRN's key layout is that of ResNet-50, not of backbone {network.backbone_name!r}")


def keep_bn_statistics(module: nn.Module) -> None:
    """Every BatchNorm of ``module`` to eval mode (running statistics), affine parameters untouched."""
    for m in module.modules():
        if isinstance(m, _NORMS):
            m.eval()


@register_model("irn_cam", backbones=("resnet50", "tiny"), released={"resnet50": "res50_cam.pth.pth"}, family="cam")
class IrnCamNet(BackboneNetwork):
    """IRN's CAM classifier (resnet50_cam): stride 16 without dilation, bias-free 1x1 classifier, no dropout.

    Args:
        backbone: ``resnet50`` (IRN) or ``tiny`` (CPU tests, toy data).
        num_classes: foreground classes C (20 on VOC).
        backbone_kwargs: extra keyword arguments for the backbone.
    """

    new_modules = ("classifier",)
    cam_fusion = "irn"  # `cam infer` fuses its scales as IRN's make_cam does, and keeps the stride-4 CAM
    backbone_defaults = {"resnet50": {"output_stride": 16, "dilate": False, "freeze_bn": False,
                                      "frozen": ("conv1", "bn1", "layer1", "layer2")}}
    fixed_bn_backbones = ("resnet50",)

    def __init__(self, *, backbone: str = "resnet50", num_classes: int = 20, backbone_kwargs: Optional[dict] = None):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 1:
            raise ValueError(f"irn_cam: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(self.backbone.out_channels["out"], num_classes, 1, bias=False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "IrnCamNet":
        """``nn.Module.train``; on ResNet-50 every BatchNorm stays on its running statistics (FixedBatchNorm)."""
        super().train(mode)
        if self.backbone_name in self.fixed_bn_backbones:
            keep_bn_statistics(self.backbone)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised.

        Returns:
            ``logits``: (B, C); ``cams``: (B, C, h, w) raw class maps at the output stride (before ReLU).
        """
        features = self.backbone(x)["out"]
        logits = self.classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
        return {"logits": logits, "cams": F.conv2d(features, self.classifier.weight)}

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        """IRN's ``CAM`` for one image: (B, 3, H, W) -> ReLU class maps (B, C, h, w) (the flip sum is the caller's)."""
        return F.relu(F.conv2d(self.backbone(x)["out"], self.classifier.weight))

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """IRN's two groups: trainable backbone parameters (lr, wd) and the classifier (10 lr, wd)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"name": "backbone", "params": backbone, "lr": lr, "lr_mult": 1.0, "weight_decay": weight_decay},
                  {"name": "classifier", "params": [self.classifier.weight], "lr": 10 * lr, "lr_mult": 10.0,
                   "weight_decay": weight_decay}]
        return [g for g in groups if g["params"]]

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` resnet50 from ``resnet50.*`` keys and ``num_classes`` from ``classifier.weight``."""
        kwargs = {"backbone": "resnet50"} if f"{RESNET_PREFIX}conv1.weight" in state_dict else {}
        if "classifier.weight" in state_dict:
            kwargs["num_classes"] = int(state_dict["classifier.weight"].shape[0])
        return kwargs

    def import_original_state_dict(self, state_dict: dict) -> dict:
        """``res50_cam.pth.pth`` (956 keys) -> ours; aliases checked equal (see :func:`import_reference`)."""
        check_reference_backbone(self)
        aliases = reference_aliases(CAM_STAGES, {"newly_added.0.": "classifier."})
        return import_reference(state_dict, aliases, {}, "res50_cam state dict")

    def export_original_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights in IRN's ``res50_cam.pth.pth`` layout (956 keys), which IRN's ``make_cam`` loads strictly."""
        check_reference_backbone(self)
        return export_reference(self.state_dict(), reference_aliases(CAM_STAGES, {"newly_added.0.": "classifier."}))
