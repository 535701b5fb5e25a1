"""IRN's networks (irn.md §2.2, §4.1-4.3): structure, forward/backward, the training loss, and strict loading of
IRN's res50_cam.pth.pth / res50_irn.pth layouts (§4.8, §10.4), built here from the spec's tables."""
import math

import pytest
import torch
import torchvision

from tests.ops.test_path_index import R10_GROUPS, parse_groups
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.irn import IrnTrainModule
from wsss.models.registry import parameter_count
from wsss.models.weights import load_network, load_state_dict_strict

CAM_STAGES = {"stage1.0": "conv1", "stage1.1": "bn1", "stage1.4": "layer1", "stage2.0": "layer2",
              "stage3.0": "layer3", "stage4.0": "layer4"}
IRN_STAGES = {"stage1.0": "conv1", "stage1.1": "bn1", "stage2.0": "layer1", "stage3.0": "layer2",
              "stage4.0": "layer3", "stage5.0": "layer4"}
EDGE_IN, DP_IN, DP_OUT = (64, 256, 512, 1024, 2048), (64, 256, 512, 1024, 2048, 768), (64, 128, 256, 256, 256, 256)


def backbone_with_aliases(stages: dict) -> dict:
    """``resnet50.*`` (torchvision minus fc, random values) plus the ``stage*`` and ``backbone.<i>`` copies."""
    tv = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    out = {f"resnet50.{k}": v for k, v in tv.items()}
    for alias, module in stages.items():
        stage, index = alias.split(".")
        for container in (alias, f"backbone.{int(stage[5:]) - 1}.{index}"):
            out.update({f"{container}.{k[len(module) + 1:]}": v for k, v in tv.items() if k.startswith(module + ".")})
    return out


def irn_heads() -> dict:
    heads = {}
    for i, cin in enumerate(EDGE_IN, start=1):
        heads.update({f"fc_edge{i}.0.weight": torch.randn(32, cin, 1, 1), f"fc_edge{i}.1.weight": torch.randn(32),
                      f"fc_edge{i}.1.bias": torch.randn(32)})
    heads.update({"fc_edge6.weight": torch.randn(1, 160, 1, 1), "fc_edge6.bias": torch.randn(1)})
    for i, (cin, cout) in enumerate(zip(DP_IN, DP_OUT), start=1):
        heads.update({f"fc_dp{i}.0.weight": torch.randn(cout, cin, 1, 1), f"fc_dp{i}.1.weight": torch.randn(cout),
                      f"fc_dp{i}.1.bias": torch.randn(cout)})
    heads.update({"fc_dp7.0.weight": torch.randn(256, 448, 1, 1), "fc_dp7.1.weight": torch.randn(256),
                  "fc_dp7.1.bias": torch.randn(256), "fc_dp7.3.weight": torch.randn(2, 256, 1, 1),
                  "fc_dp7.4.running_mean": torch.randn(2)})
    aliases = {}
    for name, value in heads.items():
        module, rest = name.split(".", 1)
        number = int(module[len("fc_edge"):] if module.startswith("fc_edge") else module[len("fc_dp"):])
        aliases[f"{'edge' if module.startswith('fc_edge') else 'dp'}_layers.{number - 1}.{rest}"] = value
    return {**heads, **aliases, "mean_shift.running_mean": heads["fc_dp7.4.running_mean"]}


@pytest.fixture(scope="module")
def irn_file_dict():
    """res50_irn.pth's 1,056 keys: backbone x3, heads x2, mean shift alias, 20 path index buffers, disp_target."""
    torch.manual_seed(0)
    sd = {**backbone_with_aliases(IRN_STAGES), **irn_heads()}
    for g, (length, count) in enumerate(parse_groups(R10_GROUPS)):
        sd[f"path_indices{g}"] = torch.zeros(1, dtype=torch.int64).expand(count, length, 13_090)
    sd["disp_target"] = torch.randn(1, 2, 152, 1)
    return sd


@pytest.fixture(scope="module")
def cam_file_dict():
    """res50_cam.pth.pth's 956 keys."""
    torch.manual_seed(1)
    classifier = torch.randn(20, 2048, 1, 1)
    return {**backbone_with_aliases(CAM_STAGES), "classifier.weight": classifier, "newly_added.0.weight": classifier}


def test_released_irn_layout_loads_strictly(irn_file_dict, tmp_path):
    assert len(irn_file_dict) == 1056
    torch.save(irn_file_dict, tmp_path / "res50_irn.pth")
    net = load_network(tmp_path / "res50_irn.pth", model="irn")
    assert net.backbone_name == "resnet50" and not net.training
    assert torch.equal(net.backbone.layer3[0].conv1.weight, irn_file_dict["resnet50.layer3.0.conv1.weight"])
    assert torch.equal(net.fc_edge6.bias, irn_file_dict["fc_edge6.bias"])
    assert torch.equal(net.mean_shift.running_mean, irn_file_dict["mean_shift.running_mean"])
    exported = net.export_original_state_dict()
    buffers = {k for k in irn_file_dict if k.startswith("path_indices") or k == "disp_target"}
    assert set(exported) == set(irn_file_dict) - buffers and len(exported) == 1035
    assert all(torch.equal(v, irn_file_dict[k]) for k, v in exported.items())


def test_released_cam_layout_loads_strictly(cam_file_dict, tmp_path):
    assert len(cam_file_dict) == 956
    torch.save(cam_file_dict, tmp_path / "res50_cam.pth.pth")
    net = load_network(tmp_path / "res50_cam.pth.pth", model="irn_cam")
    assert net.num_classes == 20 and torch.equal(net.classifier.weight, cam_file_dict["classifier.weight"])
    assert torch.equal(net.backbone.bn1.running_var, cam_file_dict["backbone.0.1.running_var"])
    exported = net.export_original_state_dict()
    assert set(exported) == set(cam_file_dict) and all(torch.equal(v, cam_file_dict[k]) for k, v in exported.items())
    renamed = dict(cam_file_dict)
    renamed["classifier.weights"] = renamed.pop("classifier.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(UserError, match=r"unexpected 1 \(classifier\.weights\)"):
        load_network(tmp_path / "renamed.pth", model="irn_cam")


def test_irn_layout_mismatches_fail_naming_the_key(irn_file_dict):
    net = build_model("irn", backbone="resnet50")

    def load(sd):
        load_state_dict_strict(net, net.import_original_state_dict(sd), source="res50_irn.pth")

    load(irn_file_dict)
    broken = dict(irn_file_dict)
    broken["stage4.0.0.conv1.weight"] = broken["stage4.0.0.conv1.weight"] + 1
    with pytest.raises(UserError, match=r"stage4\.0\.0\.conv1\.weight differs from resnet50\.layer3\.0\.conv1"):
        load(broken)
    broken = {k: v for k, v in irn_file_dict.items() if k not in ("fc_edge6.bias", "edge_layers.5.bias")}
    with pytest.raises(UserError, match=r"missing 1 \(fc_edge6\.bias\)"):
        load(broken)
    broken = {**irn_file_dict, "path_indices2": torch.zeros(2, 4, 13_090, dtype=torch.int64)}  # group 4:4
    with pytest.raises(UserError, match=r"path_indices2 has shape \(2, 4, 13090\), expected \(4, 4, 13090\)"):
        load(broken)
    with pytest.raises(UserError, match=r"unexpected 1 \(extra\.weight\)"):
        load({**irn_file_dict, "extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="ResNet-50"):
        build_model("irn", backbone="tiny").import_original_state_dict(irn_file_dict)
    with pytest.raises(UserError, match="resnet50, tiny"):
        build_model("irn", backbone="vgg16")


def test_parameter_counts_and_groups_as_the_reference():
    assert parameter_count("irn", backbone="resnet50") == 24_902_561
    assert parameter_count("irn_cam", backbone="resnet50") == 23_548_992
    with torch.device("meta"):
        net = build_model("irn", backbone="resnet50")
    edge, dp = net.param_groups(0.1, 1e-4)
    assert (edge["name"], edge["lr"], edge["lr_mult"], edge["weight_decay"]) == ("edge_layers", 0.1, 1.0, 1e-4)
    assert (dp["name"], dp["lr"], dp["lr_mult"], dp["weight_decay"]) == ("dp_layers", 1.0, 10.0, 1e-4)
    assert (len(edge["params"]), sum(p.numel() for p in edge["params"])) == (17, 125_409)
    assert (len(dp["params"]), sum(p.numel() for p in dp["params"])) == (22, 1_269_120)
    assert not any(p.requires_grad for p in net.backbone.parameters())


def test_irn_cam_structure_on_resnet50():
    torch.manual_seed(0)
    net = build_model("irn_cam", backbone="resnet50").train()
    bb = net.backbone
    assert bb.layer4[0].conv2.stride == (1, 1) and bb.layer4[0].conv2.dilation == (1, 1)
    assert bb.layer3[0].conv2.stride == (2, 2)
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in net.modules()) and net.classifier.bias is None
    assert all(not m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))  # fixed statistics
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in bb.named_parameters() if n.startswith(("layer3.", "layer4."))}
    assert "layer3.0.bn1.weight" in trainable                                       # BN gamma/beta do train
    bound = 1 / math.sqrt(2048)                                                     # kaiming_uniform(a=sqrt(5))
    assert bound * 0.9 < net.classifier.weight.abs().max() <= bound
    backbone_group, head_group = net.param_groups(0.1, 1e-4)
    assert (backbone_group["lr_mult"], head_group["lr_mult"]) == (1.0, 10.0)
    assert backbone_group["weight_decay"] == head_group["weight_decay"] == 1e-4
    assert len(backbone_group["params"]) == len(trainable)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 64, 80))
    assert out["cams"].shape == (1, 20, 4, 5)                                       # stride 16
    torch.testing.assert_close(out["logits"], out["cams"].mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_irn_cam_forward_backward_tiny():
    torch.manual_seed(0)
    net = build_model("irn_cam", backbone="tiny", num_classes=5).train()
    out = net(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 5) and out["cams"].shape == (2, 5, 8, 8)
    torch.nn.functional.multilabel_soft_margin_loss(out["logits"], torch.ones(2, 5)).backward()
    assert net.classifier.weight.grad.abs().sum() > 0
    assert (net.forward_cam(torch.randn(1, 3, 64, 64)) >= 0).all()


def test_irn_forward_shapes_on_resnet50():
    net = build_model("irn", backbone="resnet50").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 50, 70))
    assert out["boundary"].shape == (1, 1, 13, 18) and out["displacement"].shape == (1, 2, 13, 18)


def two_region_batch(size=64):
    label = torch.zeros(2, size, size, dtype=torch.uint8)
    label[:, 8:40, 8:30], label[:, 20:56, 36:60] = 3, 7
    label[:, 8:40, 28:32] = 255
    return {"image": torch.randn(2, 3, size, size), "ir_label": label}


@pytest.mark.parametrize("radius,size", [(5, 64), (10, 80)])
def test_irn_train_module_forward_backward_tiny(radius, size):
    torch.manual_seed(0)
    net = build_model("irn", backbone="tiny").train()
    assert not net.backbone.training and net.fc_edge1.training
    module = IrnTrainModule(net, radius=radius)
    out = module(two_region_batch(size))
    assert set(out) == {"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg", "n_bg_pos", "n_fg_pos", "n_neg"}
    assert torch.isfinite(out["loss"]) and min(out[f"n_{k}"] for k in ("bg_pos", "fg_pos", "neg")) > 0
    out["loss"].backward()
    assert net.fc_edge1[0].weight.grad.abs().sum() > 0 and net.fc_dp1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.backbone.parameters())
    assert module.visuals(two_region_batch(size))["boundary"].shape == (3, size, size)
    with pytest.raises(ValueError, match="multiple"):
        module({**two_region_batch(size), "ir_label": torch.zeros(2, 62, 62).byte()})


def test_mean_shift_estimate_and_eval_offset():
    torch.manual_seed(0)
    net = build_model("irn", backbone="tiny").train()
    batches = [torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32) + 1]
    with torch.no_grad():
        raw = [net(x)["displacement"].mean(dim=(0, 2, 3)) for x in batches]   # train mode: no offset
    shift = net.estimate_mean_shift(batches)
    torch.testing.assert_close(shift, (raw[0] + raw[1]) / 2)
    assert net.training and torch.equal(net.mean_shift.running_mean, shift)
    x = batches[0]
    with torch.no_grad():
        trained, evaluated = net(x)["displacement"], net.eval()(x)["displacement"]
    torch.testing.assert_close(evaluated, trained - shift.view(1, 2, 1, 1))


def test_irn_infer_pads_and_flip_averages():
    torch.manual_seed(0)
    net = build_model("irn", backbone="tiny").eval()
    image = torch.randn(3, 50, 70)
    out = net.infer(image, pad_size=96)
    assert out["boundary"].shape == (13, 18) and out["displacement"].shape == (2, 13, 18)
    assert (out["boundary"] >= 0).all() and (out["boundary"] <= 1).all()
    # GroupNorm statistics include the padding: another pad size gives other boundaries (as in IRN)
    assert not torch.allclose(net.infer(image, pad_size=128)["boundary"], out["boundary"])
    assert net.infer(torch.randn(3, 100, 40), pad_size=96)["boundary"].shape == (25, 10)   # a side above the pad
