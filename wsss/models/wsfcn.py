"""WS-FCN (Wang et al., TNNLS 2023): the single-stage network with FCA context, flow alignment and SF2 fusion.

``wsfcn`` is ``single_stage`` with its decoder's context and fusion replaced (through the seams of
:class:`~wsss.models.single_stage.SingleStageNet`); everything else is shared code::

    conv6 (stride 8) -> FCA (256 ch) -> AlignModule(conv3, .) -> aligned (256 ch, stride 4)
    (h4, v4) = SF2(conv3, aligned);  gate(deep=v4, shallow=h4) -> head (last_conv) -> 20 logits; constant 1.0
    background logit in front; softmax masks; scores = nGWP + focal penalty; with labels: PAMR on the detached
    masks, pseudo ground truth, class-balanced self-supervised loss (all as single_stage)

Taps: ``conv3`` is the raw ``b3_2`` output of WideResNet-38 (no BN/ReLU), as in WS-FCN and 1-stage-wseg (unlike
SEAM's BN-ReLU'd ``conv3``); ``conv6`` is ReLU(bn7(b7)). BN modes: the backbone's BNs frozen (WideResNet-38), the
FCA BNs frozen-statistics with trainable scale/shift, the 8 SF2 BNs and the 2 head BNs ordinary (batch statistics).
From-scratch layers (``align``, ``sf2``, ``fca``, ``head``) get WS-FCN's learning-rate multipliers 20 / 40
(weights / biases; backbone 1 / 2), twice those of 1-stage-wseg. The loss is unchanged
(:class:`~wsss.models.single_stage.SingleStageTrainModule`; WS-FCN's warm-up is 7 epochs).

Known reference behaviour kept: FCA's dead taps (:class:`~wsss.models.wsfcn_modules.FCA`). Not kept: the
stochastic gate's cached mask (drawn per call, as our single_stage).

Released weights: ``model_enc_e018Xs0.905.pth`` (flat, 355 keys, no ``module.`` prefix) maps onto ours through
``import_original_state_dict`` (``align1.*`` -> ``align.*``, ``_aff.*`` -> ``pamr.*``, ``last_conv.*`` ->
``head.*``, backbone keys under ``backbone.``; :mod:`wsss.models.single_stage_reference`), then loads strictly.

Example:
    >>> net = build_model("wsfcn", backbone="tiny").eval()
    >>> out = net(torch.randn(1, 3, 64, 64))
    >>> out["scores"].shape, out["masks"].shape
    (torch.Size([1, 20]), torch.Size([1, 21, 64, 64]))
"""
from __future__ import annotations

import torch

from wsss.models.param_groups import param_groups
from wsss.models.registry import register_model
from wsss.models.single_stage import DEEP_TAP, SHALLOW_TAP, SingleStageNet
from wsss.models.single_stage_modules import StochasticGate, mask_head
from wsss.models.wsfcn_modules import ALIGN_CHANNELS, FCA, FCA_CHANNELS, SF2, AlignModule
from wsss.ops.pamr import PAMR

BACKBONES = ("wideresnet38", "tiny")
RELEASED = {"wideresnet38": "model_enc_e018Xs0.905.pth"}
LR_MULTS = (1.0, 2.0, 20.0, 40.0)  # WS-FCN base_net.py: (backbone w, backbone b, new w, new b)
# WS-FCN's own settings, layered by ``wsss single train|infer`` over the single-stage family's per-backbone defaults
# (seam_wsfcn.md B8-B10): 31 epochs (NUM_EPOCHS 30, the loop runs 0..30) with 7 warm-up epochs (the rest, crop 321,
# scale 0.9-1, batch 16, SGD lr 1e-3 constant, momentum 0.9, weight decay 5e-4, is 1-stage-wseg's); inference with a
# constant background of 0.25 (not bg_pow) and, with --crf, the CRF input [(1 - max fg) ** 5, fg] and bilateral
# sxy 30 (scales, flip, padding 1024 and fp_cut 0.1 are 1-stage-wseg's). The tiny backbone keeps the toy recipe.
INFER_RECIPE = {"bg_const": 0.25, "crf_bg_alpha": 5.0, "crf_bilateral_sxy": 30.0}
RECIPES = {
    "single_train": {"wideresnet38": {"epochs": 31, "warmup_epochs": 7}},
    "single_infer": {backbone: INFER_RECIPE for backbone in BACKBONES},
}


@register_model("wsfcn", backbones=BACKBONES, released=RELEASED, family="single")
class WSFCNNet(SingleStageNet):
    """WS-FCN segmentation network (FCA, flow alignment, SF2 on the single-stage pipeline); Wang et al. 2023.

    Args (keyword-only, as ``single_stage``):
        backbone: backbone registry name (``wideresnet38`` as the reference; ``tiny`` for CPU tests).
        num_classes: output channels including the background (21 on VOC, 81 on COCO).
        backbone_kwargs: backbone overrides.
        psi: Stochastic Gate rate (0.3).
        pamr_iterations, pamr_dilations: PAMR settings (10, COCO 5; 1, 2, 4, 8, 12, 24).
        focal_power, focal_lambda: focal mask penalty (3, 0.01; COCO: 0.1).
        pseudo_floor, pseudo_bg_ratio: pseudo ground truth thresholds (0.2, 0.7; COCO: 0.1, 0.8).
    """

    reference_model = "wsfcn"
    new_modules = ("align", "sf2", "fca", "head")
    recipes = RECIPES

    def build_decoder(self, gate: StochasticGate, pamr: PAMR) -> None:
        """``align``, ``sf2``, ``fca``, ``pamr``, ``gate``, ``head``: the reference's state-dict order."""
        shallow, deep = self.backbone.out_channels[SHALLOW_TAP], self.backbone.out_channels[DEEP_TAP]
        self.align = AlignModule(shallow, FCA_CHANNELS, ALIGN_CHANNELS)
        self.sf2 = SF2(shallow, FCA_CHANNELS, FCA_CHANNELS)
        self.fca = FCA(deep)
        self.pamr = pamr
        self.gate = gate
        self.head = mask_head(FCA_CHANNELS, self.num_classes - 1)

    def context(self, features: torch.Tensor) -> torch.Tensor:
        """FCA on the deep tap: (B, C, h, w) -> (B, 256, h, w)."""
        return self.fca(features)

    def fuse_features(self, context: torch.Tensor, shallow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Align the FCA output to the shallow tap, then SF2: the gate's (deep = v4, shallow = h4) inputs, both
        (B, 256, H/4, W/4)."""
        shallow_out, deep_out = self.sf2(shallow, self.align(shallow, context))
        return deep_out, shallow_out

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The four reference groups with WS-FCN's multipliers (1, 2, 20, 40)."""
        return param_groups(self, lr, weight_decay, new=self.new_modules, mults=LR_MULTS)
