"""SEAM's loss (``SEAM:train_SEAM.py``), composed exactly as the reference, for the engine to minimise.

Two views of the batch share the network: I (the batch) and I' = its bilinear downscale by 0.3 (align_corners=True;
448 -> 134). The labels get a leading background entry 1: L (B, C + 1, 1, 1). With ``cam``/``pcm`` the network's
outputs of a view at that view's input size and MN = :func:`~wsss.ops.seam.max_norm`:

* ``loss_cls`` = mean over the views of the multi-label soft-margin loss of the ``logits`` (GAP of the upsampled raw
  CAM, channels 1..C);
* ``loss_rvmin`` = mean over the views of :func:`~wsss.ops.seam.rvmin_loss` of ``(pcm * L)[:, 1:]``;
* Y1 = down0.3(MN(cam_1)) * L, P1 = down0.3(MN(pcm_1)) * L, Y2 = MN(cam_2) * L, P2 = MN(pcm_2) * L;
* ``loss_er`` = :func:`~wsss.ops.seam.er_loss` (Y1, Y2); then the background rule on Y1 and Y2;
* ``loss_ecr`` = ecr(Y2 -> P1) + ecr(Y1 -> P2), the target one-hot and detached;
* ``loss = loss_cls + loss_rvmin + loss_er + loss_ecr`` (the reference logs ``loss_cls + loss_rvmin`` as its
  ``loss_cls``; we log the two apart).

Gradient routing (as the reference): classification and ER reach ``fc8`` (rows 1..C) and the backbone only; rvmin and
ECR reach ``f8_3``, ``f8_4``, ``f9`` only (the network feeds the PCM detached tensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.models.train_module import TrainModule
from wsss.models.single_stage import denormalize, overlay
from wsss.ops.seam import ecr_loss, er_loss, max_norm, rvmin_loss, with_background

VIEW_SCALE = 0.3


def second_view(image: torch.Tensor, scale: float = VIEW_SCALE) -> torch.Tensor:
    """SEAM's affine transform A: (B, 3, H, W) -> (B, 3, floor(H s), floor(W s)), bilinear, align_corners=True."""
    return F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=True)


def with_background_label(label: torch.Tensor) -> torch.Tensor:
    """(B, C) multi-hot -> (B, C + 1, 1, 1) with a leading background entry 1."""
    if label.dim() != 2:
        raise ValueError(f"labels must be (B, C) multi-hot, got {tuple(label.shape)}")
    label = label.float()
    return torch.cat([torch.ones_like(label[:, :1]), label], dim=1)[:, :, None, None]


class SeamTrainModule(TrainModule):
    """SEAM's network and loss: ``forward(batch) -> {"loss", "loss_cls", "loss_rvmin", "loss_er", "loss_ecr"}``.

    Batch: ``image`` (B, 3, H, W) normalised, ``label`` (B, C) 0/1. ``rvmin_weight`` scales the unpublished rvmin term
    (1 = the reference; 0 drops it).
    """

    def __init__(self, network: torch.nn.Module, *, rvmin_weight: float = 1.0):
        super().__init__(network)
        if rvmin_weight < 0:
            raise ValueError(f"rvmin_weight must be >= 0, got {rvmin_weight}")
        self.rvmin_weight = float(rvmin_weight)

    def _view(self, image: torch.Tensor, label: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """One forward: (network outputs, classification loss, rvmin loss)."""
        out = self.network(image)
        loss_cls = F.multilabel_soft_margin_loss(out["logits"], label[:, 1:, 0, 0])
        return out, loss_cls, rvmin_loss((out["cams_pcm"] * label)[:, 1:])

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        image = batch["image"]
        label = with_background_label(batch["label"]).to(image.dtype)
        out1, cls1, rvmin1 = self._view(image, label)
        cam1 = second_view(max_norm(out1["cams"])) * label
        pcm1 = second_view(max_norm(out1["cams_pcm"])) * label
        out2, cls2, rvmin2 = self._view(second_view(image), label)
        cam2 = max_norm(out2["cams"]) * label
        pcm2 = max_norm(out2["cams_pcm"]) * label
        terms = {"loss_cls": (cls1 + cls2) / 2, "loss_rvmin": (rvmin1 + rvmin2) / 2, "loss_er": er_loss(cam1, cam2)}
        cam1, cam2 = with_background(cam1), with_background(cam2)
        terms["loss_ecr"] = ecr_loss(cam2, pcm1) + ecr_loss(cam1, pcm2)
        loss = terms["loss_cls"] + self.rvmin_weight * terms["loss_rvmin"] + terms["loss_er"] + terms["loss_ecr"]
        return {"loss": loss, **terms}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's first image in eval mode: ``cam`` and ``pcm``, (3, H, W) in [0, 1], the argmax class's palette
        colour scaled by its normalised, label-masked score over the image (CAM background = 1 - max foreground)."""
        was_training = self.network.training
        self.network.eval()
        try:
            out = self.network(batch["image"][:1])
        finally:
            self.network.train(was_training)
        label = with_background_label(batch["label"][:1]).to(out["cams"].dtype)
        image = denormalize(batch["image"][:1].float(), self.network.normalization)[0].clamp(0, 1)
        cam = with_background(max_norm(out["cams"]) * label)[0].float()
        pcm = (max_norm(out["cams_pcm"]) * label)[0].float()
        return {"cam": overlay(image, cam).clamp(0, 1), "pcm": overlay(image, pcm).clamp(0, 1)}
