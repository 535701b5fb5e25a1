"""The single-stage network of Araslanov & Roth (CVPR 2020), its classification-only baseline, and the train module.

``single_stage`` (the reference's ``ae`` model)::

    image -> backbone -> out (stride 8) -> ASPP -> upsample to conv3 (stride 4) --+
                         conv3 (stride 4) -> skip_proj (48 ch) -------------------+-> fuse (256 ch) = deep
    gci(conv3, deep) = shallow;  gate(deep, shallow) -> head -> 20 logits; a constant 1.0 background logit in front
    masks = softmax over the 21 channels; scores = nGWP + focal penalty of the 20 foreground channels

With image labels (training and validation) the network also refines the detached masks with PAMR on the
de-normalised image at stride 4, builds the pseudo ground truth and returns the per-image segmentation loss.
``bsl`` (the reference's ``BaselineCAM``) is a backbone + one 1x1 classifier pooled by the mean: CAMs only.
Subclasses (``wsfcn``) replace the decoder's context and fusion through :meth:`SingleStageNet.build_decoder`,
:meth:`~SingleStageNet.context` and :meth:`~SingleStageNet.fuse_features`; the rest is shared.

Released weights: ``model_enc_e020Xs0.928.pth`` (the reference's flat layout) maps onto ours through
``import_original_state_dict`` (key table in :mod:`wsss.models.single_stage_reference`), then loads strictly;
``original_model_kwargs`` reads the backbone and the class count from such a file.

Example:
    >>> net = build_model("single_stage", backbone="tiny", num_classes=21)
    >>> out = net(torch.randn(2, 3, 64, 64))                     # test mode: no labels
    >>> out["scores"].shape, out["masks"].shape
    (torch.Size([2, 20]), torch.Size([2, 21, 64, 64]))
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.network import BackboneNetwork
from wsss.models.registry import register_model
from wsss.models.train_module import TrainModule
from wsss.models.single_stage_modules import ASPP, ASPP_CHANNELS, SG_PSI, SKIP_CHANNELS, GlobalCueInjection, \
    StochasticGate, conv_bn_relu, mask_head, reference_init
from wsss.models.single_stage_reference import MODEL_NAMES, OriginalLayout
from wsss.ops.global_weighted_pooling import FOCAL_LAMBDA, FOCAL_POWER, ngwp_class_scores
from wsss.ops.pamr import DEFAULT_DILATIONS, DEFAULT_ITERATIONS, PAMR
from wsss.ops.pseudo_labels import BG_RATIO as PSEUDO_BG_RATIO, FLOOR as PSEUDO_FLOOR, balanced_mask_loss, \
    clean_masks, pseudo_gt_from_masks

BACKBONES = ("wideresnet38", "vgg16", "resnet50", "resnet101", "tiny")
BACKGROUND_LOGIT = 1.0  # the constant background channel of the reference (not learned, not configurable)
BSL_BACKGROUND_SCORE = 0.1
SHALLOW_TAP, DEEP_TAP = "conv3", "out"
RELEASED = {"wideresnet38": "model_enc_e020Xs0.928.pth"}
# How 1-stage-wseg builds each backbone: ResNets at output stride 16 with no dilation; VGG16 freezes only conv1_x.
BACKBONE_DEFAULTS = {
    "resnet50": {"output_stride": 16, "dilate": False},
    "resnet101": {"output_stride": 16, "dilate": False},
    "vgg16": {"frozen": ("conv1_1", "conv1_2")},
}


def _resize_as(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _foreground_mass(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean over the labelled classes of each class's mean mask value (the reference's ``cls_fg``)."""
    mass = masks[:, 1:].flatten(2).mean(-1)
    return (mass * labels).sum(-1) / labels.sum(-1).clamp_min(1.0)


def _check_labels(labels: torch.Tensor, batch: int, classes: int) -> None:
    if labels.shape != (batch, classes):
        raise ValueError(f"labels must be (B, {classes}) multi-hot, got {tuple(labels.shape)}")


@register_model("single_stage", backbones=BACKBONES, released=RELEASED, family="single")
class SingleStageNet(OriginalLayout, BackboneNetwork):
    """Single-stage segmentation network (nGWP + focal penalty, PAMR pseudo labels, SG, GCI); Araslanov & Roth 2020.

    Args:
        backbone: backbone registry name.
        num_classes: output channels including the background (21 on VOC).
        backbone_kwargs: overrides of the backbone's reference settings (:data:`BACKBONE_DEFAULTS`).
        psi: Stochastic Gate rate (0.3).
        pamr_iterations, pamr_dilations: PAMR settings (10; 1, 2, 4, 8, 12, 24).
        focal_power, focal_lambda: focal mask penalty (3, 0.01).
        pseudo_floor, pseudo_bg_ratio: pseudo ground truth's lowest threshold and background fraction (0.2, 0.7;
            WS-FCN's COCO comments: 0.1, 0.8).
    """

    reference_model = "ae"
    new_modules = ("aspp", "gci", "skip_proj", "fuse", "head")
    backbone_defaults = BACKBONE_DEFAULTS

    def __init__(self, *, backbone: str = "wideresnet38", num_classes: int = 21,
                 backbone_kwargs: Optional[dict] = None, psi: float = SG_PSI,
                 pamr_iterations: int = DEFAULT_ITERATIONS, pamr_dilations: Sequence[int] = DEFAULT_DILATIONS,
                 focal_power: float = FOCAL_POWER, focal_lambda: float = FOCAL_LAMBDA,
                 pseudo_floor: float = PSEUDO_FLOOR, pseudo_bg_ratio: float = PSEUDO_BG_RATIO):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 2:
            raise ValueError(f"{MODEL_NAMES[self.reference_model]}: num_classes counts the background and must be "
                             f">= 2, got {num_classes}")
        self.num_classes, self.focal_power, self.focal_lambda = num_classes, focal_power, focal_lambda
        self.pseudo_floor, self.pseudo_bg_ratio = pseudo_floor, pseudo_bg_ratio
        self.build_decoder(StochasticGate(psi), PAMR(pamr_dilations, pamr_iterations))

    def build_decoder(self, gate: StochasticGate, pamr: PAMR) -> None:
        """Seam: create context, fusion, ``pamr``, ``gate``, ``head`` (creation order = state-dict order)."""
        shallow, deep = self.backbone.out_channels[SHALLOW_TAP], self.backbone.out_channels[DEEP_TAP]
        self.aspp = ASPP(deep)
        self.pamr = pamr
        self.gci = GlobalCueInjection(shallow, ASPP_CHANNELS, ASPP_CHANNELS)
        self.gate = gate
        self.skip_proj = conv_bn_relu(shallow, SKIP_CHANNELS)
        self.fuse = conv_bn_relu(ASPP_CHANNELS + SKIP_CHANNELS, ASPP_CHANNELS, kernel_size=3)
        self.head = mask_head(ASPP_CHANNELS, self.num_classes - 1)
        reference_init(self.skip_proj)
        reference_init(self.fuse)

    def context(self, features: torch.Tensor) -> torch.Tensor:
        """Seam: the context module on the deep tap, (B, C, h, w) -> ASPP (B, 256, h, w)."""
        return self.aspp(features)

    def fuse_features(self, context: torch.Tensor, shallow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Seam: context (B, 256, h, w) and shallow tap (B, C, H/4, W/4) -> the gate's (deep, shallow) inputs,
        both (B, 256, H/4, W/4): skip projection + upsampled context -> ``fuse``; GCI."""
        skip = self.skip_proj(shallow)
        deep = self.fuse(torch.cat([_resize_as(context, skip.shape[-2:]), skip], dim=1))
        return deep, self.gci(shallow, deep)

    def mask_logits(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, num_classes, H/4, W/4) logits, channel 0 the constant background."""
        taps = self.backbone(image)
        deep, shallow = self.fuse_features(self.context(taps[DEEP_TAP]), taps[SHALLOW_TAP])
        x = self.head(self.gate(deep, shallow))
        return torch.cat([torch.full_like(x[:, :1], BACKGROUND_LOGIT), x], dim=1)

    def forward(self, image: torch.Tensor, labels: Optional[torch.Tensor] = None,
                raw_image: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Scores and masks; with ``labels``, also PAMR, pseudo ground truth and the segmentation loss.

        Args:
            image: (B, 3, H, W) normalised as the backbone expects.
            labels: (B, num_classes - 1) 0/1 image labels, or None for test mode.
            raw_image: (B, 3, H, W) the same crop in [0, 1] RGB for PAMR; by default ``image`` de-normalised.

        Returns:
            ``scores`` (B, C) foreground class scores; ``masks`` (B, C + 1, H, W) softmax masks at input size.
            With labels, ``masks`` has absent classes zeroed, plus ``refined`` (B, C + 1, H, W) PAMR masks
            (cleaned), ``logits`` (B, C + 1, H/4, W/4), ``pseudo_gt`` (B, C + 1, H, W) in {0, 1},
            ``mask_loss`` (B,) and ``fg_mass`` (B,).
        """
        logits = self.mask_logits(image)
        scores, masks = ngwp_class_scores(logits, self.focal_power, self.focal_lambda)
        if labels is None:
            return {"scores": scores, "masks": _resize_as(masks, image.shape[-2:])}
        _check_labels(labels, image.shape[0], self.num_classes - 1)
        labels = labels.to(masks.dtype)
        refined = self.refine(masks.detach(), image if raw_image is None else raw_image, raw_image is None)
        size = image.shape[-2:]
        refined = clean_masks(_resize_as(refined, size), labels)
        pseudo_gt = pseudo_gt_from_masks(refined, bg_ratio=self.pseudo_bg_ratio, floor=self.pseudo_floor)
        mask_loss = balanced_mask_loss(logits.float(), pseudo_gt, labels.float())
        return {"scores": scores, "masks": clean_masks(_resize_as(masks, size), labels), "refined": refined,
                "logits": logits, "pseudo_gt": pseudo_gt, "mask_loss": mask_loss,
                "fg_mass": _foreground_mass(masks, labels)}

    @torch.no_grad()
    def refine(self, masks: torch.Tensor, image: torch.Tensor, normalised: bool = True) -> torch.Tensor:
        """PAMR of detached masks (B, K, h, w) with ``image`` (B, 3, H, W) resized to (h, w); float32, no grad."""
        if normalised:
            image = denormalize(image, self.backbone.normalization)
        with torch.autocast(image.device.type, enabled=False):
            image = _resize_as(image.float(), masks.shape[-2:])
            return self.pamr(image, masks.float())


@register_model("bsl", backbones=BACKBONES, family="single")
class BaselineCAMNet(OriginalLayout, BackboneNetwork):
    """Classification-only baseline of the single-stage paper (CAMs from a mean-pooled 1x1 classifier).

    Scores = ``classifier(mean over space of dropout2d(features))``. Masks = ReLU of the classifier on the features,
    upsampled (align_corners=True) to the input size, each class divided by (1e-5 + its spatial max), with a
    constant background channel ``bg_score`` in front.

    Args:
        backbone: backbone registry name.
        num_classes: including the background (21 on VOC).
        backbone_kwargs: overrides of the backbone's reference settings (:data:`BACKBONE_DEFAULTS`).
        bg_score: the constant background mask value (0.1).
    """

    reference_model = "bsl"
    new_modules = ("classifier",)
    backbone_defaults = BACKBONE_DEFAULTS

    def __init__(self, *, backbone: str = "wideresnet38", num_classes: int = 21,
                 backbone_kwargs: Optional[dict] = None, bg_score: float = BSL_BACKGROUND_SCORE):
        super().__init__(backbone=backbone, backbone_kwargs=backbone_kwargs)
        if num_classes < 2:
            raise ValueError(f"bsl: num_classes counts the background and must be >= 2, got {num_classes}")
        self.num_classes, self.bg_score = num_classes, bg_score
        self.dropout = nn.Dropout2d(0.5)
        self.classifier = nn.Conv2d(self.backbone.out_channels[DEEP_TAP], num_classes - 1, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)

    def forward(self, image: torch.Tensor, labels: Optional[torch.Tensor] = None,
                raw_image: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W) -> ``scores`` (B, C), ``masks`` (B, C + 1, H, W) in [0, 1]; with ``labels`` (B, C)
        also ``logits`` (B, C, h, w) and ``fg_mass`` (B,), and ``masks`` with absent classes zeroed.
        ``raw_image`` is accepted for a uniform call and unused."""
        features = self.backbone(image)[DEEP_TAP]
        scores = self.classifier(F.adaptive_avg_pool2d(self.dropout(features), 1)).flatten(1)
        logits = self.classifier(features)
        cams = F.relu(_resize_as(logits, image.shape[-2:]))
        cams = cams / (1e-5 + cams.flatten(2).amax(-1)[:, :, None, None])
        masks = torch.cat([torch.full_like(cams[:, :1], self.bg_score), cams], dim=1)
        if labels is None:
            return {"scores": scores, "masks": masks}
        _check_labels(labels, image.shape[0], self.num_classes - 1)
        labels = labels.to(masks.dtype)
        return {"scores": scores, "masks": clean_masks(masks, labels), "logits": logits,
                "fg_mass": _foreground_mass(masks, labels)}


def denormalize(image: torch.Tensor, normalization) -> torch.Tensor:
    """(B, 3, H, W) network input -> the same image as RGB in [0, 1] (undoes ``normalization.apply``)."""
    mean = image.new_tensor(normalization.mean).view(1, 3, 1, 1)
    std = image.new_tensor(normalization.std).view(1, 3, 1, 1)
    rgb = (image * std + mean) * (normalization.scale / 255.0)
    return rgb.flip(1) if normalization.bgr else rgb


class SingleStageTrainModule(TrainModule):
    """Network + loss for the engine: ``forward(batch) -> {"loss", "loss_cls", "loss_mask", "fg_mass"}``.

    ``loss = loss_cls + mask_loss_weight * loss_mask`` from epoch ``warmup_epochs`` on (the reference's
    ``TRAIN.PRETRAIN = 5``; no ramp), ``loss_cls`` alone before; ``loss_mask`` is computed and logged throughout.
    ``loss_cls`` is the multi-label soft-margin loss of the scores, averaged over classes and images; ``loss_mask``
    is the batch mean of the per-image balanced loss. The engine calls :meth:`set_epoch` at every epoch start.

    Batch: ``image`` (B, 3, H, W) normalised, ``label`` (B, C) multi-hot, optionally ``raw_image`` (B, 3, H, W)
    RGB in [0, 1] for PAMR (by default the image de-normalised).
    """

    def __init__(self, network: nn.Module, *, warmup_epochs: int = 5, mask_loss_weight: float = 1.0):
        super().__init__(network)
        if warmup_epochs < 0 or mask_loss_weight < 0:
            raise ValueError(f"warmup_epochs and mask_loss_weight must be >= 0, got {warmup_epochs}, "
                             f"{mask_loss_weight}")
        self.warmup_epochs, self.mask_loss_weight = warmup_epochs, mask_loss_weight
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def mask_loss_active(self) -> bool:
        return self.epoch >= self.warmup_epochs

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"].float()
        out = self.network(batch["image"], labels=labels, raw_image=batch.get("raw_image"))
        loss_cls = F.multilabel_soft_margin_loss(out["scores"].float(), labels)
        terms = {"loss_cls": loss_cls, "fg_mass": out["fg_mass"].detach().mean()}
        loss = loss_cls
        if "mask_loss" in out:
            terms["loss_mask"] = out["mask_loss"].mean()
            if self.mask_loss_active:
                loss = loss + self.mask_loss_weight * terms["loss_mask"]
        return {"loss": loss, **terms}

    @torch.no_grad()
    def visuals(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's first image in eval mode: [image | masks | PAMR masks | pseudo labels], (3, H, 4W) in [0, 1]."""
        was_training = self.network.training
        self.network.eval()
        try:
            out = self.network(batch["image"][:1], labels=batch["label"][:1].float())
        finally:
            self.network.train(was_training)
        image = denormalize(batch["image"][:1].float(), self.network.backbone.normalization)[0].clamp(0, 1)
        panels = [image] + [overlay(image, out[k][0].float()) for k in ("masks", "refined", "pseudo_gt") if k in out]
        return {"masks": torch.cat(panels, dim=-1)}


def overlay(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """0.3 image + 0.7 (palette colour of the argmax class x its value): image (3, H, W) in [0, 1], masks
    (K, H, W) -> (3, H, W)."""
    from wsss.data.palette import VOC_PALETTE

    palette = torch.tensor(VOC_PALETTE[:3 * masks.shape[0]], dtype=image.dtype, device=image.device).view(-1, 3)
    value, index = masks.max(0)
    colour = palette[index].permute(2, 0, 1) / 255.0 * value.clamp(0, 1)
    return 0.3 * image + 0.7 * colour
