"""Backbones: taps, channels, strides, forward/backward, freezing, key names, and agreement with a plain
functional re-statement of the reference networks (written here from the spec tables)."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from tests.models.reference_keys import VGG16_KEYS, WIDERESNET38_KEYS
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.backbone import TAPS
from wsss.models.registry import parameter_count

BACKBONES = ("tiny", "vgg16", "resnet50", "resnet101", "wideresnet38")


def randomise_norms(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that BN mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def wrn38():
    torch.manual_seed(0)
    net = build_model("wideresnet38")
    randomise_norms(net)
    return net


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_backward_taps(name, wrn38):
    torch.manual_seed(0)
    net = wrn38 if name == "wideresnet38" else build_model(name)
    net.train()
    net.zero_grad(set_to_none=True)
    out = net(torch.randn(2, 3, 32, 32))
    assert tuple(out) == TAPS and out["out"] is out["conv6"]
    for tap, y in out.items():
        side = math.ceil(32 / net.strides[tap])
        assert y.shape == (2, net.out_channels[tap], side, side), tap
        assert torch.isfinite(y).all()
    assert net.output_stride == 8
    sum(y.mean() for y in out.values()).backward()
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in net.parameters() if p.requires_grad)
    assert all(p.grad is None for p in net.parameters() if not p.requires_grad)
    net.zero_grad(set_to_none=True)


def test_wideresnet38_keys_equal_the_reference_list(wrn38):
    sd = wrn38.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == list(WIDERESNET38_KEYS.items())
    assert parameter_count("wideresnet38") == 105_070_912


def test_vgg16_keys_equal_the_reference_list():
    sd = build_model("vgg16").state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == list(VGG16_KEYS.items())
    assert parameter_count("vgg16") == 20_483_904


@pytest.mark.parametrize("name,tv", [("resnet50", torchvision.models.resnet50),
                                     ("resnet101", torchvision.models.resnet101)])
def test_resnet_keys_are_torchvision_without_fc(name, tv):
    ours = {k: v.shape for k, v in build_model(name).state_dict().items()}
    theirs = {k: v.shape for k, v in tv().state_dict().items() if not k.startswith("fc.")}
    assert ours == theirs


def test_wideresnet38_freezing_as_psa(wrn38):
    wrn38.train()
    norms = [m for m in wrn38.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 37 and not any(m.training for m in norms)
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    frozen = {n for n, p in wrn38.named_parameters() if not p.requires_grad and ".bn" not in n and n[:3] != "bn7"}
    assert frozen == {"conv1a.weight", "b2.conv_branch2a.weight", "b2.conv_branch2b1.weight",
                      "b2.conv_branch1.weight", "b2_1.conv_branch2a.weight", "b2_1.conv_branch2b1.weight",
                      "b2_2.conv_branch2a.weight", "b2_2.conv_branch2b1.weight"}
    assert wrn38.b6.dropout_2b1.training and wrn38.b7.dropout_2b2.p == 0.5 and wrn38.b6.dropout_2b2.p == 0.3
    wrn38.eval()


def test_freezing_options():
    vgg = build_model("vgg16", frozen=("conv1_1", "conv1_2"))
    assert {n for n, p in vgg.named_parameters() if not p.requires_grad} == {
        "conv1_1.weight", "conv1_1.bias", "conv1_2.weight", "conv1_2.bias"}
    tiny = build_model("tiny", freeze_bn=True, frozen=("stem",))
    tiny.train()
    assert not tiny.stem[1].training and not tiny.stage6[1].training
    assert not any(p.requires_grad for p in tiny.stem.parameters())
    assert not tiny.stage6[1].weight.requires_grad and tiny.stage6[0].weight.requires_grad
    with pytest.raises(UserError, match="cannot freeze.*conv9"):
        build_model("vgg16", frozen=("conv9",))


@pytest.mark.parametrize("stride,dilate", [(8, True), (16, True), (16, False), (32, True)])
def test_resnet_output_stride(stride, dilate):
    net = build_model("resnet50", output_stride=stride, dilate=dilate).eval()
    out = net(torch.randn(1, 3, 64, 64))
    assert net.output_stride == stride
    for tap, y in out.items():
        assert y.shape[-1] == 64 // net.strides[tap], tap
    if stride == 16:
        assert net.layer4[1].conv2.dilation == ((2, 2) if dilate else (1, 1))
    with pytest.raises(UserError, match="output_stride must be 8, 16 or 32"):
        build_model("resnet50", output_stride=4)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build_model("tiny")(torch.randn(1, 1, 16, 16))


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        training=False, eps=1e-5)


def reference_wrn38(x, sd):
    """psa resnet38d forward_as_dict (+ single-stage conv3), restated from the spec tables in eval mode."""
    blocks = [("b2", 2, 1, 1), ("b2_1", 1, 1, 1), ("b2_2", 1, 1, 1), ("b3", 2, 1, 1), ("b3_1", 1, 1, 1),
              ("b3_2", 1, 1, 1), ("b4", 2, 1, 1)] + [(f"b4_{i}", 1, 1, 1) for i in range(1, 6)] + \
             [("b5", 1, 1, 2), ("b5_1", 1, 2, 2), ("b5_2", 1, 2, 2)]
    taps = {}
    x = F.conv2d(x, sd["conv1a.weight"], padding=1)
    for name, stride, d1, d2 in blocks:
        a = F.relu(_bn(x, sd, f"{name}.bn_branch2a"))
        if name == "b5":
            taps["conv4"] = a
        short = F.conv2d(a, sd[f"{name}.conv_branch1.weight"], stride=stride) \
            if f"{name}.conv_branch1.weight" in sd else x
        b = F.conv2d(a, sd[f"{name}.conv_branch2a.weight"], stride=stride, padding=d1, dilation=d1)
        b = F.conv2d(F.relu(_bn(b, sd, f"{name}.bn_branch2b1")), sd[f"{name}.conv_branch2b1.weight"],
                     padding=d2, dilation=d2)
        x = short + b
        if name == "b3_2":
            taps["conv3"] = x
    for name in ("b6", "b7"):
        a = F.relu(_bn(x, sd, f"{name}.bn_branch2a"))
        if name == "b6":
            taps["conv5"] = a
        b = F.conv2d(a, sd[f"{name}.conv_branch2a.weight"])
        b = F.conv2d(F.relu(_bn(b, sd, f"{name}.bn_branch2b1")), sd[f"{name}.conv_branch2b1.weight"],
                     padding=4, dilation=4)
        b = F.conv2d(F.relu(_bn(b, sd, f"{name}.bn_branch2b2")), sd[f"{name}.conv_branch2b2.weight"])
        x = F.conv2d(a, sd[f"{name}.conv_branch1.weight"]) + b
    taps["conv6"] = F.relu(_bn(x, sd, "bn7"))
    return taps


def reference_vgg16(x, sd, fc6_dilation):
    """psa vgg16d forward_as_dict (+ single-stage conv3), restated from the spec table."""
    taps = {}
    for stage, n, pool_stride, dilation in ((1, 2, 2, 1), (2, 2, 2, 1), (3, 3, 2, 1), (4, 3, 1, 1), (5, 3, 0, 2)):
        for i in range(1, n + 1):
            x = F.relu(F.conv2d(x, sd[f"conv{stage}_{i}.weight"], sd[f"conv{stage}_{i}.bias"],
                                padding=dilation, dilation=dilation))
        if stage >= 3:
            taps[f"conv{stage}"] = x
        if pool_stride:
            x = F.max_pool2d(x, 3, pool_stride, 1)
    x = F.relu(F.conv2d(x, sd["fc6.weight"], sd["fc6.bias"], padding=fc6_dilation, dilation=fc6_dilation))
    taps["conv6"] = F.relu(F.conv2d(x, sd["fc7.weight"], sd["fc7.bias"]))
    return taps


def _assert_taps_close(ours, ref):
    for tap, y in ref.items():
        scale = float(y.abs().max()) + 1e-6
        torch.testing.assert_close(ours[tap], y, rtol=1e-4, atol=1e-5 * scale, msg=tap)


def test_wideresnet38_agrees_with_the_spec(wrn38):
    wrn38.eval()
    x = torch.randn(1, 3, 67, 91)
    with torch.no_grad():
        ours = wrn38(x)
        ref = reference_wrn38(x, wrn38.state_dict())
    assert ours["out"].shape[-2:] == (9, 12)  # psa: a 67x91 input gives 9x12 features
    _assert_taps_close(ours, ref)


@pytest.mark.parametrize("fc6_dilation", [1, 4])
def test_vgg16_agrees_with_the_spec(fc6_dilation):
    torch.manual_seed(0)
    net = build_model("vgg16", fc6_dilation=fc6_dilation).eval()
    x = torch.randn(1, 3, 67, 91)
    with torch.no_grad():
        ours = net(x)
        ref = reference_vgg16(x, net.state_dict(), fc6_dilation)
    assert ours["out"].shape[-2:] == (9, 12) and ours["conv3"].shape[-2:] == (17, 23)
    _assert_taps_close(ours, ref)
