"""How the layers of one public Caffe model become one registered backbone's keys (used by convert_caffemodel.py).

A :class:`Layout` names the backbone the output loads into and a function from one layer to its arrays under our
keys (None: the layer cannot be mapped, and is reported; ``{}``: the layer is skipped on purpose). Layers without
blobs (data, ReLU, pooling) never reach it. To support another Caffe model, write such a function and add an entry
to :data:`LAYOUTS`; the wire reader needs no change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass
class CaffeLayer:
    """A layer with its blobs: ``type`` is the string type, or ``"V1:<enum>"`` for legacy layers."""

    name: str
    type: str
    blobs: list


@dataclass(frozen=True)
class Layout:
    """One public Caffe model: the backbone it converts into and the per-layer mapping."""

    backbone: str
    keys: Callable[[CaffeLayer], Optional[dict]]
    source: str
    release_md5: Optional[str]  # None: not recorded in the reference specs
    notes: str


def collect(layers: list[CaffeLayer], layout: Layout) -> tuple[dict[str, np.ndarray], list[str]]:
    """Apply ``layout`` to every layer with blobs: (our key -> array, descriptions of the unmapped layers).

    A layer whose keys were already filled by an earlier layer counts as unmapped.
    """
    arrays, unmapped = {}, []
    for layer in layers:
        if not layer.blobs:
            continue
        new = layout.keys(layer)
        if new is None or arrays.keys() & new.keys():
            unmapped.append(f"{layer.name or '<unnamed>'} ({len(layer.blobs)} blobs)")
        else:
            arrays.update(new)
    return arrays, unmapped


# ---- vgg16: the DeepLab-LargeFOV "20M" initialisation (psa_affinitynet.md §1.4) ---------------------------------

def vgg16_keys(layer: CaffeLayer) -> Optional[dict]:
    """``X.weight`` = blobs[0], ``X.bias`` = blobs[1] for X in conv1_1 .. conv5_3, fc6, fc7."""
    from wsss.models.vgg16 import VGG_CONVS  # imported on use: torch is not needed to refuse a file

    if layer.name not in [name for name, *_ in VGG_CONVS] + ["fc6", "fc7"] or len(layer.blobs) != 2:
        return None
    return {f"{layer.name}.weight": layer.blobs[0], f"{layer.name}.bias": layer.blobs[1]}


# ---- resnet101_caffe: DeepLab-v2's MSRA ResNet-101 (retrain.md §1.1, deeplab-pytorch's translation) -------------

RESNET_PARTS = {"1": "shortcut", "2a": "reduce", "2b": "conv3x3", "2c": "increase"}
RESNET_NAME = re.compile(r"(?P<kind>res|bn|scale)(?P<stage>[2-5])(?P<block>[a-z]|b\d+)_branch(?P<branch>1|2a|2b|2c)")
RESNET_STEM = {"conv1": "res", "bn_conv1": "bn", "scale_conv1": "scale"}
RESNET_BLOBS = {"res": 1, "bn": 3, "scale": 2, "fc": 2}
MSC_BRANCHES = ("res075", "res05")  # DeepLab's shared multi-scale copies of the layers: skipped


def resnet_unit(name: str) -> Optional[tuple[str, str]]:
    """(kind, our conv-unit prefix) of a Caffe ResNet layer name, e.g. ``"res4b22_branch2c"`` ->
    ``("res", "layer4.block23.increase")``: blocks a, b, c are 1, 2, 3 and b{k} is k + 1.
    """
    if name in RESNET_STEM:
        return RESNET_STEM[name], "layer1.conv1"
    m = RESNET_NAME.fullmatch(name)
    if m is None:
        return None
    block = m["block"]
    n = ord(block) - ord("a") + 1 if len(block) == 1 else int(block[1:]) + 1
    return m["kind"], f"layer{m['stage']}.block{n}.{RESNET_PARTS[m['branch']]}"


def batchnorm_statistics(blobs: list) -> tuple[np.ndarray, np.ndarray]:
    """Caffe ``BatchNorm`` blobs (mean sum, variance sum, scale factor) -> (running_mean, running_var).

    Caffe divides the first two by the factor, and uses 0 when the factor is 0.
    """
    factor = float(np.asarray(blobs[2]).ravel()[0])
    scale = np.float32(0.0 if factor == 0 else 1.0 / factor)
    return np.asarray(blobs[0]) * scale, np.asarray(blobs[1]) * scale


def resnet101_caffe_keys(layer: CaffeLayer) -> Optional[dict]:
    """conv -> ``.conv.weight``; BatchNorm -> ``.bn.running_{mean,var}``; Scale -> ``.bn.{weight,bias}``;
    the one ``fc...`` classifier -> ``fc.{weight,bias}`` (dropped at loading by the backbone's ``init_drop``).
    """
    if any(tag in layer.name for tag in MSC_BRANCHES):
        return {}
    unit = ("fc", "fc") if layer.name.startswith("fc") else resnet_unit(layer.name)
    if unit is None or len(layer.blobs) != RESNET_BLOBS[unit[0]]:
        return None
    kind, prefix = unit
    blobs = layer.blobs
    if kind == "res":
        return {f"{prefix}.conv.weight": blobs[0]}
    if kind == "bn":
        mean, var = batchnorm_statistics(blobs)
        return {f"{prefix}.bn.running_mean": mean, f"{prefix}.bn.running_var": var}
    if kind == "scale":
        return {f"{prefix}.bn.weight": blobs[0], f"{prefix}.bn.bias": blobs[1]}
    return {"fc.weight": blobs[0], "fc.bias": blobs[1]}


LAYOUTS = {
    "vgg16": Layout(backbone="vgg16", keys=vgg16_keys, source="vgg16_20M.caffemodel", release_md5=None,
                    notes="X.weight (out, in, kh, kw) = blobs[0], X.bias = blobs[1] for every VGG layer X"),
    "resnet101_caffe": Layout(
        backbone="resnet101_caffe", keys=resnet101_caffe_keys, source="init.caffemodel", release_md5=None,
        notes="conv blobs[0] -> .conv.weight; BatchNorm mean, var = blobs[0], blobs[1] / blobs[2][0]; "
              "Scale gamma, beta -> .bn.weight, .bn.bias; fc -> fc.* (dropped when loaded)"),
}
