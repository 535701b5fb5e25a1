"""torchvision's DeepLabV3-ResNet101 (``retrain.md`` §1.4) as a thin wrapper that keeps torchvision's keys.

The network is built by ``torchvision.models.segmentation.deeplabv3_resnet101`` (never downloading anything here)
and its three parts are adopted as they are, so the state dict is torchvision's: ``backbone.*`` (torchvision
``resnet101`` without ``fc``, dilated to output stride 8), ``classifier.*`` (ASPP 12/24/36 + image pooling, 256 ch),
``aux_classifier.*`` (FCNHead on ``layer3``): 676 keys and 60,996,202 parameters with the aux head (668 /
58,630,997 without). Any torchvision DeepLabV3-ResNet101 state dict loads strictly through
:func:`wsss.models.weights.load_network`; the ImageNet init (``resnet101-5d3b4d8f.pth``) goes into ``.backbone``
through :func:`wsss.models.weights.load_backbone_init`, which drops its ``fc.*`` explicitly.

The full-model weights ``COCO_WITH_VOC_LABELS_V1`` were trained with **pixel** labels (COCO images, VOC classes):
not an admissible WSSS initialisation. :func:`check_init_weights` refuses them unless explicitly allowed.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet101_Weights
from torchvision.models.segmentation import deeplabv3_resnet101

from wsss.errors import UserError
from wsss.models.normalization import IMAGENET_RGB, Normalization
from wsss.models.registry import register_model

PIXEL_SUPERVISED_WEIGHTS = ("COCO_WITH_VOC_LABELS_V1",)
AUX_LR_MULT = 10.0  # torchvision reference: backbone and classifier 1x, aux classifier 10x


def check_init_weights(name: str, allow_pixel_supervised: bool = False) -> None:
    """Refuse torchvision's pixel-supervised full-model weights unless ``allow_pixel_supervised``.

    Raises:
        UserError: for ``COCO_WITH_VOC_LABELS_V1`` (or ``DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1``).
    """
    if name.rsplit(".", 1)[-1] in PIXEL_SUPERVISED_WEIGHTS and not allow_pixel_supervised:
        raise UserError(f"--init-weights {name}: these weights were trained with pixel labels (COCO images, VOC "
                        f"classes), not an admissible weakly-supervised initialisation; use the ImageNet backbone, "
                        f"or pass --allow-pixel-supervised-init")


@register_model("deeplabv3_resnet101", family="seg")
class DeepLabV3ResNet101(nn.Module):
    """torchvision DeepLabV3-ResNet101 (output stride 8, ASPP 12/24/36), torchvision's keys.

    Args:
        num_classes: output channels including the background (21 on VOC).
        aux_loss: build the FCN auxiliary head on ``layer3`` (torchvision reference: yes, weight 0.5).

    Input: ImageNet-normalised RGB. BN trains (as the torchvision reference).
    """

    def __init__(self, *, num_classes: int = 21, aux_loss: bool = True):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"deeplabv3_resnet101: num_classes counts the background, >= 2, got {num_classes}")
        tv = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
        self.num_classes, self.aux_loss = num_classes, bool(aux_loss)
        self.backbone = tv.backbone
        self.classifier = tv.classifier
        self.aux_classifier = tv.aux_classifier
        # what load_backbone_init asks of a backbone: its name, the init keys to drop, the torchvision enum
        self.backbone.name = "resnet101"
        self.backbone.init_drop = ("fc.weight", "fc.bias")
        self.backbone.torchvision_weights = functools.partial(getattr, ResNet101_Weights, "IMAGENET1K_V1")

    @property
    def normalization(self) -> Normalization:
        """ImageNet mean/std, RGB."""
        return IMAGENET_RGB

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) -> ``logits`` (B, C, H, W) and, with the aux head, ``aux_logits`` (B, C, H, W).

        Both are upsampled bilinearly (align_corners False) to the input size, as torchvision does.
        """
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"logits": F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear",
                                       align_corners=False)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            out["aux_logits"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return out

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """torchvision reference groups: backbone 1x, classifier 1x, aux classifier 10x; weight decay on all."""
        groups = []
        for name, mult in (("backbone", 1.0), ("classifier", 1.0), ("aux_classifier", AUX_LR_MULT)):
            module: Optional[nn.Module] = getattr(self, name)
            params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
            if params:
                groups.append({"name": name, "params": params, "lr": lr * mult, "lr_mult": mult,
                               "weight_decay": weight_decay})
        return groups

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``num_classes`` from ``classifier.4.weight`` and ``aux_loss`` from the presence of the aux head."""
        kwargs = {"aux_loss": any(k.startswith("aux_classifier.") for k in state_dict)}
        if "classifier.4.weight" in state_dict:
            kwargs["num_classes"] = int(state_dict["classifier.4.weight"].shape[0])
        return kwargs
