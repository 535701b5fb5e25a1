"""SEAM's network (``resnet38_SEAM``): a CAM head plus the Pixel Correlation Module, and its multi-scale inference.

Head (``SEAM:network/resnet38_SEAM.py``): Dropout2d(0.5) on the final features, then ``fc8``, a 1x1 conv to
``num_classes + 1`` channels without bias (Xavier-uniform), giving the raw CAM at stride 8 with channel 0 the
nominal background (it never receives a gradient in training). The PCM (:mod:`wsss.ops.seam`) refines the
detached, one-hot seed of that CAM with affinities of ``f9(concat[x_s, f8_3, f8_4])`` (195 -> 192 channels, no bias,
Xavier-uniform gain 4), where ``x_s`` is the input resized to the CAM size (bilinear, align_corners=True),
``f8_3 = ReLU(conv1x1(conv4.detach()))`` (-> 64 ch) and ``f8_4 = ReLU(conv1x1(conv5.detach()))`` (-> 128 ch),
both without bias, Kaiming-normal. Both maps are upsampled to the input size (bilinear, align_corners=True).

Taps: on ``wideresnet38`` ``conv4`` and ``conv5`` are SEAM's (the BN-ReLU'd inputs of ``b5`` and ``b6``, 512 and
1024 ch) and ``out`` its ``conv6`` (4096 ch); SEAM's ``conv3`` tap is unused. On ``tiny`` the same roles are the
stage4/stage5/stage6 outputs (64, 96, 128 ch). Frozen in training as SEAM: every BN and ``conv1a, b2, b2_1, b2_2``
on wideresnet38 (the backbone's defaults). Gradient routing: the PCM sees only detached tensors of the CAM branch,
so PCM losses train ``f8_3``, ``f8_4``, ``f9`` alone, and CAM losses never reach them.

The released ``resnet38_SEAM.pth`` (a flat state dict of 232 keys: the 228 ``resnet38d`` keys with
``num_batches_tracked``, ``fc8``, ``f8_3``, ``f8_4``, ``f9``) loads strictly through
:func:`wsss.models.weights.load_network` with ``model="seam"``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model
from wsss.ops.multiscale import fuse_scale_outputs, scaled_inputs
from wsss.ops.seam import pcm_refine, pcm_seed, seam_normalize_cams

SEAM_BACKBONES = ("wideresnet38", "tiny")
SEAM_SCALES = (0.5, 1.0, 1.5, 2.0)
# (conv name, backbone tap, output channels): SEAM's naming quirk, "f8_3" reads conv4 and "f8_4" conv5.
PCM_BRANCHES = (("f8_3", "conv4", 64), ("f8_4", "conv5", 128))
PCM_IN_CHANNELS = 3 + sum(b[2] for b in PCM_BRANCHES)  # 195
PCM_OUT_CHANNELS = 192


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


@register_model("seam", backbones=SEAM_BACKBONES, released={"wideresnet38": "resnet38_SEAM.pth"})
class SeamNet(BackboneNetwork):
    """SEAM (resnet38_SEAM): CAM head with a background channel plus the Pixel Correlation Module.

    Args:
        backbone: ``wideresnet38`` (the reference) or ``tiny``.
        num_classes: foreground classes C (20 on VOC); ``fc8`` has C + 1 outputs, channel 0 the background.
        backbone_kwargs: extra keyword arguments for the backbone (e.g. ``frozen``).

    Parameter groups: backbone weights 1x (wd); ``fc8``, ``f8_3``, ``f8_4``, ``f9`` 10x (wd); no biases anywhere.
    """

    new_modules = ("fc8",) + tuple(b[0] for b in PCM_BRANCHES) + ("f9",)

    def __init__(self, *, backbone: str = "wideresnet38", num_classes: int = 20,
                 backbone_kwargs: Optional[dict] = None):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 1:
            raise ValueError(f"seam: num_classes must be >= 1, got {num_classes}")
        taps = ("conv4", "conv5", "out")
        if len({self.backbone.strides[t] for t in taps}) != 1:
            raise UserError(f"seam: backbone {backbone} has its {'/'.join(taps)} taps at different strides")
        self.num_classes = num_classes
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(self.backbone.out_channels["out"], num_classes + 1, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        for name, tap, channels in PCM_BRANCHES:
            self.add_module(name, nn.Conv2d(self.backbone.out_channels[tap], channels, 1, bias=False))
            nn.init.kaiming_normal_(getattr(self, name).weight)
        self.f9 = nn.Conv2d(PCM_IN_CHANNELS, PCM_OUT_CHANNELS, 1, bias=False)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    @property
    def stride(self) -> int:
        """Stride of the head maps relative to the input."""
        return self.backbone.strides["out"]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) normalised.

        Returns:
            ``cams``: (B, C + 1, H, W) the raw CAM (``fc8`` through dropout in training), upsampled to the input
            size; channel 0 the nominal background.
            ``cams_pcm``: (B, C + 1, H, W) the PCM-refined CAM, upsampled likewise; channel 0 is the propagated seed
            background.
            ``logits``: (B, C) global average of ``cams[:, 1:]`` (the classification scores SEAM trains on).
        """
        taps = self.backbone(x)
        cams = self.fc8(self.dropout7(taps["out"]))
        size = cams.shape[-2:]
        branches = [F.relu(getattr(self, name)(taps[tap].detach())) for name, tap, _ in PCM_BRANCHES]
        features = self.f9(torch.cat([_resize(x, size)] + branches, dim=1))
        refined = pcm_refine(pcm_seed(cams), features)
        cams = _resize(cams, x.shape[-2:])
        return {"cams": cams, "cams_pcm": _resize(refined, x.shape[-2:]), "logits": cams[:, 1:].mean(dim=(2, 3))}

    @classmethod
    def original_model_kwargs(cls, state_dict: dict) -> dict:
        """``backbone`` from the key names; ``num_classes`` from ``fc8.weight`` (minus the background channel),
        only when the file has SEAM's whole head (``f9.weight`` too): a PSA classifier file then fails on its
        missing and mis-shaped keys rather than on an implied class count."""
        kwargs = super().original_model_kwargs(state_dict)
        if "fc8.weight" in state_dict and "f9.weight" in state_dict:
            kwargs["num_classes"] = int(state_dict["fc8.weight"].shape[0]) - 1
        return kwargs


@torch.inference_mode()
def seam_image_cams(network: SeamNet, image: np.ndarray, labels: Sequence[int], num_classes: int, normalization,
                    scales: Sequence[float] = SEAM_SCALES, flip: bool = True,
                    device: Optional[torch.device] = None) -> np.ndarray:
    """SEAM's multi-scale inference (``infer_SEAM.py``) of one image for its present classes.

    Per scale (PIL bicubic to ``round(W s) x round(H s)``) and its flip, in eval mode: the PCM output (already
    upsampled to the scaled input by the network, align_corners=True) without channel 0, upsampled to H x W
    (align_corners=False), masked by the image label, flipped back; **summed**; then
    :func:`~wsss.ops.seam.seam_normalize_cams` (SEAM's per-class min-max) clipped to [0, 1].

    Args:
        network: a :class:`SeamNet` in eval mode, on ``device``.
        image: (H, W, 3) uint8 RGB.
        labels: the present foreground classes, 0-based (rows of the output, in this order).
        num_classes: foreground classes C of the network.
        normalization: the backbone's :class:`~wsss.models.normalization.Normalization`.
        scales: input scales (SEAM: 0.5, 1, 1.5, 2); flip: also run each horizontally flipped.
        device: where to run (default: the network's device).

    Returns:
        (K, H, W) float32 in [0, 1], K = len(labels). Memory: the PCM affinity is (hw)^2 per input, about 1 GB at
        scale 2 of a 500x500 image.
    """
    labels = _check_classes(labels, num_classes)
    device = device if device is not None else next(network.parameters()).device
    outputs = [seam_maps(network, x.to(device)) for x in scaled_inputs(image, normalization, scales, flip)]
    return seam_fuse(outputs, labels, image.shape[:2], num_classes, flip)


def _check_classes(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be 0-based classes below {num_classes}, got {labels.tolist()}")
    return labels


def seam_maps(network: SeamNet, x: torch.Tensor) -> torch.Tensor:
    """The foreground PCM maps of one input batch (B, 3, h, w): (B, C, h, w) float32 on the CPU."""
    return network(x)["cams_pcm"][:, 1:].float().cpu()


def seam_fuse(outputs: Sequence[torch.Tensor], labels: Sequence[int], size: tuple[int, int], num_classes: int,
              flip: bool) -> np.ndarray:
    """SEAM's fusion of the per-scale outputs of :func:`seam_maps` (each (1 or 2, C, h_s, w_s), the flip second):
    upsampled to ``size`` (H, W), masked by the labels, flipped back, summed, min-max normalised and clipped:
    (K, H, W) float32 in [0, 1], rows in ``labels`` order."""
    labels = _check_classes(labels, num_classes)
    mask = torch.zeros(num_classes)
    mask[labels] = 1
    total = fuse_scale_outputs(outputs, flip, size, mask)
    return seam_normalize_cams(total[labels]).numpy().astype(np.float32)
