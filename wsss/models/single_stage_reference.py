"""Key mapping between the single-stage reference code's state dicts (1-stage-wseg, and WS-FCN built on it) and
our networks.

The reference saves ``model.state_dict()`` of a network that *inherits* from its backbone, as a flat dict with no
``module.`` prefix (e.g. the released ``model_enc_e020Xs0.928.pth``: WideResNet-38 + ``ae``, 309 keys, CUDA
tensors). Our networks hold the backbone under ``backbone.`` and give the decoder parts descriptive names:

========================  ==========================
reference                 ours
========================  ==========================
``<backbone keys>``       ``backbone.<same keys>``
``aspp.*``                ``aspp.*`` (same inside)
``_aff.aff_x.kernel``     ``pamr.difference_kernel``
``_aff.aff_m.kernel``     ``pamr.neighbour_kernel``
``_aff.aff_std.kernel``   ``pamr.window_kernel``
``shallow_mask.*``        ``gci.*`` (same inside)
``fc8_skip.*``            ``skip_proj.*``
``fc8_x.*``               ``fuse.*``
``last_conv.*``           ``head.*``
========================  ==========================

WS-FCN (``model_enc_e018Xs0.905.pth``: WideResNet-38, 355 keys) keeps the backbone, ``_aff`` and ``last_conv`` names
and replaces ASPP/GCI/skip/fuse by ``align1.*`` -> ``align.*``, ``sf2.*`` -> ``sf2.*`` and ``fca.*`` -> ``fca.*``
(same inside). It is told apart from 1-stage-wseg by ``align1.flow_make.weight``.

The baseline (``bsl``) stores its one classifier three times (``fc8.weight``, ``cls_branch.2.weight``,
``mask_branch.0.weight``, a shared tensor); all three become ``classifier.weight`` and must be equal.
The mapping only renames: whether every expected tensor is present with the right shape is decided by the strict
load that follows (:func:`wsss.models.weights.load_state_dict_strict`).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from wsss.errors import UserError

AE_PREFIXES = (
    ("aspp.", "aspp."),
    ("_aff.aff_x.kernel", "pamr.difference_kernel"),
    ("_aff.aff_m.kernel", "pamr.neighbour_kernel"),
    ("_aff.aff_std.kernel", "pamr.window_kernel"),
    ("shallow_mask.", "gci."),
    ("fc8_skip.", "skip_proj."),
    ("fc8_x.", "fuse."),
    ("last_conv.", "head."),
)
BSL_CLASSIFIER_KEYS = ("fc8.weight", "cls_branch.2.weight", "mask_branch.0.weight")
WSFCN_PREFIXES = (
    ("align1.", "align."),
    ("sf2.", "sf2."),
    ("fca.", "fca."),
) + tuple(pair for pair in AE_PREFIXES if pair[0].startswith(("_aff.", "last_conv.")))
PREFIXES = {"ae": AE_PREFIXES, "wsfcn": WSFCN_PREFIXES}
# Checked in this order (a WS-FCN dict also holds the ae marker); CLASSIFIER_KEYS give the class count.
MODEL_MARKERS = {"wsfcn": "align1.flow_make.weight", "ae": "last_conv.8.weight", "bsl": "fc8.weight"}
CLASSIFIER_KEYS = {"wsfcn": "last_conv.8.weight", "ae": "last_conv.8.weight", "bsl": "fc8.weight"}
MODEL_NAMES = {"ae": "single_stage", "bsl": "bsl", "wsfcn": "wsfcn"}
BACKBONE_PREFIX = "backbone."


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Drop a ``module.`` prefix carried by every key (a DataParallel-wrapped save)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def reference_model_type(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``"wsfcn"``, ``"ae"`` or ``"bsl"`` for a reference state dict, None when it is none of them."""
    keys = set(_strip_module_prefix(state_dict))
    for model, marker in MODEL_MARKERS.items():
        if marker in keys:
            return model
    return None


def _check_model_type(state_dict: Mapping[str, torch.Tensor], model: str) -> None:
    found = reference_model_type(state_dict)
    if found is None:
        raise UserError(f"not a 1-stage-wseg state dict: none of {', '.join(MODEL_MARKERS.values())} is present "
                        f"(expected the reference's {MODEL_NAMES[model]} layout)")
    if found != model:
        raise UserError(f"this 1-stage-wseg state dict holds the '{MODEL_NAMES[found]}' network, not "
                        f"'{MODEL_NAMES[model]}' (use --model {MODEL_NAMES[found]})")


def reference_model_kwargs(state_dict: Mapping[str, torch.Tensor], model: str,
                           backbone: Optional[str] = None) -> dict:
    """Builder arguments a reference ``model`` state dict implies: ``num_classes`` (with the background) from the
    classifier's shape, and ``backbone`` read from the key names (:func:`wsss.models.network.backbone_from_keys`),
    left out when not recognisable, unless given.

    Raises:
        UserError: when the dict is not a reference state dict of ``model``.
    """
    from wsss.models.network import backbone_from_keys

    state_dict = _strip_module_prefix(state_dict)
    _check_model_type(state_dict, model)
    kwargs = {"num_classes": int(state_dict[CLASSIFIER_KEYS[model]].shape[0]) + 1}
    backbone = backbone or backbone_from_keys(state_dict)
    if backbone is not None:
        kwargs["backbone"] = backbone
    return kwargs


def _convert_bsl(state_dict: dict) -> dict:
    shared = [k for k in BSL_CLASSIFIER_KEYS if k in state_dict]
    first = state_dict[shared[0]]
    for key in shared[1:]:
        if state_dict[key].shape != first.shape or not torch.equal(state_dict[key].cpu(), first.cpu()):
            raise UserError(f"bsl state dict: {key} differs from {shared[0]} (they are one shared classifier)")
    out = {"classifier.weight": first}
    for key, value in state_dict.items():
        if key not in BSL_CLASSIFIER_KEYS:
            out[BACKBONE_PREFIX + key] = value
    return out


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor], model: str) -> dict:
    """Rename a 1-stage-wseg state dict to our keys (tensors unchanged, no copy).

    Args:
        state_dict: the reference's flat state dict (a ``module.`` prefix on every key is dropped).
        model: ``"ae"`` (our ``single_stage``), ``"wsfcn"`` or ``"bsl"``.

    Returns:
        A new dict in our names, ready for a strict load.

    Raises:
        UserError: when the dict is not a reference state dict of ``model``.
    """
    if model not in MODEL_MARKERS:
        raise ValueError(f"model must be one of {tuple(MODEL_MARKERS)}, got {model!r}")
    state_dict = _strip_module_prefix(state_dict)
    _check_model_type(state_dict, model)
    if model == "bsl":
        return _convert_bsl(state_dict)
    out = {}
    for key, value in state_dict.items():
        for prefix, ours in PREFIXES[model]:
            if key.startswith(prefix):
                out[ours + key[len(prefix):]] = value
                break
        else:
            out[BACKBONE_PREFIX + key] = value
    return out


def export_reference_state_dict(state_dict: Mapping[str, torch.Tensor], model: str) -> dict:
    """The inverse of :func:`convert_reference_state_dict`: our state dict in the reference's names (CPU copies).

    Args:
        state_dict: our ``single_stage`` (``model="ae"``), ``wsfcn`` or ``bsl`` network's state dict.
        model: ``"ae"``, ``"wsfcn"`` or ``"bsl"``.

    Returns:
        A flat dict the reference code loads with ``load_state_dict``.
    """
    if model not in MODEL_MARKERS:
        raise ValueError(f"model must be one of {tuple(MODEL_MARKERS)}, got {model!r}")
    out = {}
    for key, value in state_dict.items():
        value = value.detach() if value.is_meta else value.detach().cpu()
        if key.startswith(BACKBONE_PREFIX):
            out[key[len(BACKBONE_PREFIX):]] = value
        elif model == "bsl" and key == "classifier.weight":
            out.update({name: value for name in BSL_CLASSIFIER_KEYS})
        else:
            matches = [ref + key[len(ours):] for ref, ours in PREFIXES.get(model, ()) if key.startswith(ours)]
            if not matches:
                raise ValueError(f"no 1-stage-wseg name for our key {key!r}")
            out[matches[0]] = value
    return out


class OriginalLayout:
    """Mixin of our networks for the original authors' state-dict layout (``reference_model``: a key of
    :data:`MODEL_NAMES`)."""

    reference_model = ""

    def import_original_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict:
        """A reference flat state dict in our names (same tensors), ready for a strict load."""
        return convert_reference_state_dict(state_dict, model=self.reference_model)

    def export_original_state_dict(self) -> dict:
        """Our weights in the reference layout (detached, on CPU), e.g. for the reference's own scripts."""
        return export_reference_state_dict(self.state_dict(), model=self.reference_model)

    @classmethod
    def original_model_kwargs(cls, state_dict: Mapping[str, torch.Tensor]) -> dict:
        """``num_classes`` and (when recognisable) ``backbone`` of a reference state dict."""
        return reference_model_kwargs(state_dict, model=cls.reference_model)
