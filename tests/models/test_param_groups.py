"""The 1x/2x/10x/20x learning-rate groups: a hand-worked module and the group sizes the spec verified."""
import pytest
from torch import nn

from wsss.models import build_model
from wsss.models.param_groups import param_groups


def _sizes(groups):
    return {g["name"]: len(g["params"]) for g in groups}


def test_hand_worked_groups():
    net = nn.Sequential()
    net.add_module("body", nn.Conv2d(3, 4, 3))                      # pretrained weight + bias
    net.add_module("frozen", nn.Conv2d(4, 4, 1))                    # no grad: in no group
    net.add_module("head", nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))  # new: 2 weights, 2 biases
    net.frozen.requires_grad_(False)
    groups = param_groups(net, 0.1, 5e-4, new=("head",))
    assert [g["name"] for g in groups] == ["pretrained_weight", "pretrained_bias", "new_weight", "new_bias"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.2, 1.0, 2.0])
    assert [g["lr_mult"] for g in groups] == [1.0, 2.0, 10.0, 20.0]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert groups[0]["params"] == [net.body.weight] and groups[1]["params"] == [net.body.bias]
    assert groups[2]["params"] == [net.head[0].weight, net.head[1].weight]
    assert groups[3]["params"] == [net.head[0].bias, net.head[1].bias]


def test_psa_group_sizes():
    # psa: resnet38_cls [35, 0, 1, 0] after train(); vgg16_aff counts GN as pretrained (1x / 2x).
    cam = build_model("cam", backbone="wideresnet38")
    assert _sizes(cam.param_groups(0.1, 5e-4)) == {"pretrained_weight": 35, "new_weight": 1}
    aff = build_model("aff", backbone="vgg16")
    assert _sizes(aff.param_groups(0.1, 5e-4)) == {"pretrained_weight": 14, "pretrained_bias": 14, "new_weight": 4}
    vgg_cam = build_model("cam", backbone="vgg16")
    groups = vgg_cam.param_groups(0.1, 5e-4)
    assert _sizes(groups) == {"pretrained_weight": 11, "pretrained_bias": 11, "new_weight": 1}
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.2, 1.0])


def test_resnet_multipliers_and_bad_names():
    aff = build_model("aff", backbone="resnet50")
    assert [g["lr_mult"] for g in aff.param_groups(1.0, 0.0)] == [1.0, 10.0]
    with pytest.raises(ValueError, match="unknown new modules"):
        param_groups(aff, 0.1, 0.0, new=("fc9",))
