"""Every registered network and backbone: forward + backward on a tiny input, named outputs, finite values.

The test loops over the registry, so a new network gets this smoke test by being registered. A network is built on
the ``tiny`` backbone when it accepts it, else on the first backbone it accepts (or none).
"""
from __future__ import annotations

import inspect

import pytest
import torch

from wsss.models.registry import build_model, list_models, model_entry

SIZE = 64


def _kwargs(name: str) -> dict:
    entry = model_entry(name)
    params = inspect.signature(entry.builder).parameters
    kwargs = {}
    if entry.backbones:
        kwargs["backbone"] = "tiny" if "tiny" in entry.backbones else entry.backbones[0]
    if "num_classes" in params:
        kwargs["num_classes"] = 5
    if "aux_loss" in params:
        kwargs["aux_loss"] = False  # keep the torchvision wrapper small: the aux head has its own tests
    return kwargs


def _tensors(out) -> dict:
    assert isinstance(out, dict) and out, "a network returns a non-empty dict of named tensors"
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("name", list_models(kind="network"))
def test_network_forward_backward(name):
    torch.manual_seed(0)
    net = build_model(name, **_kwargs(name)).train()
    out = _tensors(net(torch.randn(2, 3, SIZE, SIZE)))
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
        if value.dim() >= 1:
            assert value.shape[0] == 2, (key, tuple(value.shape))
    loss = sum(v.float().mean() for v in out.values() if v.is_floating_point() and v.requires_grad)
    loss.backward()
    assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    with torch.no_grad():
        evaluated = _tensors(net.eval()(torch.randn(1, 3, SIZE, SIZE)))
    assert all(torch.isfinite(v).all() for v in evaluated.values())
    assert net.normalization is not None  # every network declares its input convention


@pytest.mark.parametrize("name", [n for n in list_models(kind="backbone") if n in ("tiny", "vgg16", "resnet50")])
def test_backbone_taps(name):
    net = build_model(name).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, SIZE, SIZE))
    for tap, channels in net.out_channels.items():
        assert out[tap].shape[1] == channels and out[tap].shape[-1] == SIZE // net.strides[tap], tap
