"""PSA method networks ("cam", "aff") on every backbone: outputs, CAM relations, heads, key layout."""
import math

import pytest
import torch

from tests.models.reference_keys import (RESNET38_AFF_HEAD, RESNET38_CLS_HEAD, VGG16_AFF_HEAD, VGG16_CLS_HEAD,
                                         VGG16_KEYS, WIDERESNET38_KEYS)
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.registry import parameter_count

BACKBONES = ("tiny", "vgg16", "resnet50", "resnet101", "wideresnet38")
# The big backbones are checked forward+backward in test_backbones.py and the wideresnet38 classifier end to end in
# test_weights.py; the full network x backbone grid with them is slow on a shared CPU.
GRID = [pytest.param(b, marks=pytest.mark.slow) if b in ("resnet101", "wideresnet38") else b for b in BACKBONES]


@pytest.mark.parametrize("backbone", GRID)
def test_cam_forward_backward(backbone):
    torch.manual_seed(0)
    net = build_model("cam", backbone=backbone, num_classes=5).train()
    out = net(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 5) and out["cams"].shape == (2, 5, 4, 4)
    assert all(torch.isfinite(v).all() for v in out.values())
    (out["logits"].sum() + out["cams"].mean()).backward()
    assert net.fc8.weight.grad is not None and net.fc8.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", GRID)
def test_aff_forward_backward(backbone):
    torch.manual_seed(0)
    net = build_model("aff", backbone=backbone).train()
    out = net(torch.randn(2, 3, 32, 32))
    assert set(out) == {"features"} and out["features"].shape == (2, 448, 4, 4)
    assert torch.isfinite(out["features"]).all() and (out["features"] >= -1).all()  # ELU output
    out["features"].mean().backward()
    assert all(getattr(net, n).weight.grad is not None for n in ("f8_3", "f8_4", "f8_5", "f9"))
    assert net.backbone.strides["conv6"] == 8 and net.group_norm == (backbone == "vgg16")


def test_cam_relations_to_the_reference_forward_cam():
    torch.manual_seed(0)
    for backbone, activation in (("tiny", torch.relu), ("vgg16", lambda c: torch.relu(c).sqrt())):
        net = build_model("cam", backbone=backbone).eval()
        x = torch.randn(1, 3, 40, 48)
        with torch.no_grad():
            out = net(x)
            cam = net.forward_cam(x)
        torch.testing.assert_close(out["logits"], out["cams"].mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cam, activation(out["cams"]))
        assert (out["cams"] < 0).any() and (cam >= 0).all()


def test_head_initialisation_as_psa():
    torch.manual_seed(0)
    aff = build_model("aff", backbone="tiny")
    assert aff.f9.weight.abs().max() <= 4 * math.sqrt(6 / (448 + 448))  # xavier_uniform, gain 4
    assert aff.f9.weight.abs().max() > 3 * math.sqrt(6 / (448 + 448))
    # kaiming normal, fan_in 64
    assert float(aff.f8_3.weight.detach().std()) == pytest.approx(math.sqrt(2 / 64), rel=0.2)
    cam = build_model("cam", backbone="tiny")
    assert cam.fc8.bias is None and cam.fc8.weight.abs().max() <= math.sqrt(6 / (128 + 20))


def test_original_key_layout_and_counts():
    cam = build_model("cam", backbone="wideresnet38")
    exported = {k: tuple(v.shape) for k, v in cam.export_original_state_dict().items()}
    assert exported == {**WIDERESNET38_KEYS, **RESNET38_CLS_HEAD}
    assert set(cam.state_dict()) == set(cam.import_original_state_dict(cam.export_original_state_dict()))
    del cam
    for name, head in (("cam", VGG16_CLS_HEAD), ("aff", VGG16_AFF_HEAD)):
        net = build_model(name, backbone="vgg16")
        exported = {k: tuple(v.shape) for k, v in net.export_original_state_dict().items()}
        assert exported == {**VGG16_KEYS, **head}
    aff_keys = set(RESNET38_AFF_HEAD)
    assert aff_keys <= set(build_model("aff", backbone="tiny").state_dict())
    assert parameter_count("cam", backbone="wideresnet38") == 105_152_832
    assert parameter_count("aff", backbone="wideresnet38") == 106_484_032


def test_aff_vgg16_uses_fc6_dilation_4_and_cam_uses_1():
    assert build_model("aff", backbone="vgg16").backbone.fc6.dilation == (4, 4)
    assert build_model("cam", backbone="vgg16").backbone.fc6.dilation == (1, 1)


def test_bad_configurations():
    with pytest.raises(UserError, match="conv4/conv5/conv6 taps at strides"):
        build_model("aff", backbone="resnet50", backbone_kwargs={"output_stride": 16})
    with pytest.raises(UserError, match="unknown model 'resnet18'"):
        build_model("cam", backbone="resnet18")
    with pytest.raises(UserError, match="'cam' is not a backbone"):
        build_model("cam", backbone="cam")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cam", backbone="tiny", num_classes=0)
