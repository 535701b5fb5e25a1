"""PSA's CAM classifier (``resnet38_cls`` / ``vgg16_cls``) on any registered backbone.

Head: Dropout2d(0.5) on the final features, global average pooling, ``fc8`` = 1x1 conv to ``num_classes``
without bias (Xavier-uniform init), giving the logits. The class activation maps are the same 1x1 conv applied
to the final features without dropout.

Relation to the reference's ``forward_cam`` (what ``infer_cls.py`` upsamples and sums):

* ``wideresnet38`` (and our other backbones): ``forward_cam(x) = ReLU(cams)``;
* ``vgg16``: ``forward_cam(x) = sqrt(ReLU(cams))`` (the square root is VGG-only in PSA).

:meth:`CamNet.forward_cam` reproduces it exactly; ``forward(x)["cams"]`` is the raw map before that activation.
In eval mode ``logits == cams.mean((2, 3))`` (linear head without bias). PSA's VGG head applies ``fc8`` before the
pooling and its ResNet head after it; the two orders agree up to float rounding, and we use the ResNet order.

Released PSA files ``res38_cls.pth`` (and the VGG16 one) load strictly through
:func:`wsss.models.weights.load_network`: their flat keys (``b4_3...``, ``fc8.weight``) are mapped to ours
(``backbone.b4_3...``, ``fc8.weight``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model

CAM_BACKBONES = ("wideresnet38", "vgg16", "resnet50", "resnet101", "tiny")
# backbone -> activation of forward_cam in the reference
_SQRT_CAM = ("vgg16",)
# SEAM's PCM layers: a file that has them is no PSA classifier, and no class count is read from it
_OTHER_HEADS = ("f8_3", "f8_4", "f9")


@register_model("cam", backbones=CAM_BACKBONES, released={"wideresnet38": "res38_cls.pth"})
class CamNet(BackboneNetwork):
    """PSA classifier with a CAM head (resnet38_cls / vgg16_cls) on any backbone.

    Args:
        backbone: registry name of the backbone.
        num_classes: foreground classes C (20 on VOC).
        backbone_kwargs: extra keyword arguments for the backbone (e.g. ``output_stride``, ``frozen``).

    Frozen in training, as in PSA: every backbone BN and the early blocks (see each backbone's docstring).
    Parameter groups: backbone weights 1x (wd), backbone biases 2x (no wd), ``fc8.weight`` 10x (wd).
    """

    new_modules = ("fc8",)

    def __init__(self, *, backbone: str = "wideresnet38", num_classes: int = 20,
                 backbone_kwargs: Optional[dict] = None):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 1:
            raise ValueError(f"cam: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(self.backbone.out_channels["out"], num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised.

        Returns:
            ``logits``: (B, C) classification scores (through dropout in training mode).
            ``cams``: (B, C, h, w) raw class maps at the backbone's output stride (before any ReLU).
        """
        features = self.backbone(x)["out"]
        cams = F.conv2d(features, self.fc8.weight)
        pooled = self.dropout7(features).mean(dim=(2, 3), keepdim=True)
        logits = self.fc8(pooled).flatten(1)
        return {"logits": logits, "cams": cams}

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` from the key names and ``num_classes`` from ``fc8.weight`` of a flat original file, unless the
        file has other heads (SEAM's ``f8_3``/``f8_4``/``f9``): such a file then fails on its unexpected and
        mis-shaped keys rather than on an implied class count."""
        kwargs = super().original_model_kwargs(state_dict)
        if "fc8.weight" in state_dict and not any(k.split(".")[0] in _OTHER_HEADS for k in state_dict):
            kwargs["num_classes"] = int(state_dict["fc8.weight"].shape[0])
        return kwargs

    def cam_activation(self, cams: torch.Tensor) -> torch.Tensor:
        """The reference's activation of raw cams: ReLU, then a square root for VGG16."""
        cams = F.relu(cams)
        return cams.sqrt() if self.backbone_name in _SQRT_CAM else cams

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly the reference's ``forward_cam``: (B, 3, H, W) -> (B, C, h, w) non-negative class maps."""
        cams = F.conv2d(self.backbone(x)["out"], self.fc8.weight)
        return self.cam_activation(cams)
