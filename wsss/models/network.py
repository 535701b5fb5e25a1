"""Base class of the method networks: a registered backbone under ``backbone.`` plus head layers.

It gives every method network the same three things:

* ``param_groups(lr, weight_decay)``: the reference groups (:mod:`wsss.models.param_groups`), with the modules
  in ``new_modules`` as from-scratch layers and the backbone's learning-rate multipliers;
* ``import_original_state_dict(sd)``: the original authors' flat layout (backbone and head side by side, e.g.
  ``b4_3.conv_branch2a.weight`` and ``fc8.weight``) mapped to ours (``backbone.b4_3...``, ``fc8.weight``);
* ``export_original_state_dict()``: the inverse, for writing files the reference code reads;
* ``original_model_kwargs(sd)``: the builder arguments a flat original file implies (its backbone, and what
  subclasses add, e.g. the class count), so that a released file alone rebuilds the network.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from wsss.models.param_groups import param_groups
from wsss.models.registry import build_backbone

BACKBONE_PREFIX = "backbone."


def backbone_from_keys(keys) -> Optional[str]:
    """The backbone whose parameter names a flat state dict uses, or None if none matches.

    ``conv1a.weight`` -> wideresnet38, ``conv1_1.weight`` -> vgg16, ``stem.0.weight`` -> tiny, torchvision names
    -> resnet50 or resnet101 by the number of ``layer3`` blocks (6 or 23).
    """
    keys = set(keys)
    for key, name in (("conv1a.weight", "wideresnet38"), ("conv1_1.weight", "vgg16"), ("stem.0.weight", "tiny")):
        if key in keys:
            return name
    if "layer1.0.conv1.weight" in keys:
        blocks = {k.split(".")[1] for k in keys if k.startswith("layer3.")}
        return {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    return None


class BackboneNetwork(nn.Module):
    """A method network built on a registered backbone.

    Subclasses set ``new_modules`` (from-scratch layer names, which get the 10x/20x learning rates) and
    ``head_modules`` (top-level names that are not part of the backbone in the original flat layout; by default
    the same as ``new_modules``), and ``backbone_defaults`` (per backbone name, keyword arguments the reference
    builds that backbone with, e.g. ``{"vgg16": {"fc6_dilation": 4}}``), and ``recipes`` (per stage name, per
    backbone name, the method's published settings of that stage, which the stage layers over its own per-backbone
    defaults, e.g. ``{"single_train": {"wideresnet38": {"epochs": 31}}}``).
    """

    new_modules: tuple = ()
    head_modules: Optional[tuple] = None
    backbone_defaults: dict = {}
    recipes: dict = {}

    @classmethod
    def stage_recipe(cls, stage: str, backbone: str) -> dict:
        """The network's own settings of ``stage`` on ``backbone`` (a copy; empty when it declares none)."""
        return dict(cls.recipes.get(stage, {}).get(backbone, {}))

    def __init__(self, *, backbone: str, backbone_kwargs: Optional[dict] = None):
        super().__init__()
        kwargs: dict[str, Any] = {**self.backbone_defaults.get(backbone, {}), **(backbone_kwargs or {})}
        self.backbone_name = backbone
        self.backbone = build_backbone(backbone, **kwargs)

    @property
    def normalization(self):
        """The input convention of the backbone's weights (a :class:`~wsss.models.normalization.Normalization`)."""
        return self.backbone.normalization

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The four reference learning-rate groups (1x/2x/10x/20x for WideResNet-38 and VGG16)."""
        return param_groups(self, lr, weight_decay, new=self.new_modules, mults=self.backbone.lr_mults)

    def _head_names(self) -> tuple:
        return self.new_modules if self.head_modules is None else self.head_modules

    def import_original_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map the original flat key layout to ours: non-head keys move under ``backbone.``."""
        heads = self._head_names()
        out = {}
        for key, value in state_dict.items():
            top = key.split(".", 1)[0]
            out[key if top in heads or key.startswith(BACKBONE_PREFIX) else BACKBONE_PREFIX + key] = value
        return out

    @classmethod
    def original_model_kwargs(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Builder arguments implied by a flat original state dict: ``{"backbone": ...}`` when recognisable."""
        name = backbone_from_keys(state_dict)
        return {} if name is None else {"backbone": name}

    def export_original_state_dict(self) -> dict[str, torch.Tensor]:
        """Our state dict in the original flat layout (``backbone.`` prefix removed), detached on CPU."""
        return {k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k: v.detach().cpu()
                for k, v in self.state_dict().items()}
