"""DeepLab-v1 on WideResNet-38 (sscb / psa heads), DeepLab-LargeFOV VGG16, torchvision DeepLabV3-ResNet101."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from tests.models.reference_keys import VGG16_KEYS, WIDERESNET38_KEYS
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.deeplab_v1 import DeepLabV1
from wsss.models.deeplab_v3 import DeepLabV3ResNet101, check_init_weights
from wsss.models.normalization import CAFFE_BGR, IMAGENET_RGB
from wsss.models.weights import load_network, load_state_dict_strict

# retrain.md §1.2(a): the keys of the sscb checkpoint outside the backbone (C = 21)
SSCB_HEAD = {"conv_fov.weight": (512, 4096, 3, 3), "conv_fov2.weight": (512, 512, 1, 1),
             "cls_conv.weight": (21, 512, 1, 1), "cls_conv.bias": (21,),
             **{f"{bn}.{p}": (512,) for bn in ("bn_fov", "bn_fov2")
                for p in ("weight", "bias", "running_mean", "running_var")},
             "bn_fov.num_batches_tracked": (), "bn_fov2.num_batches_tracked": ()}
# §1.2(b): the MCTformer / PSA-lineage head
PSA_HEAD = {"fc8_seg_conv1.weight": (512, 4096, 3, 3), "fc8_seg_conv1.bias": (512,),
            "fc8_seg_conv2.weight": (21, 512, 3, 3), "fc8_seg_conv2.bias": (21,)}


def meta_dict(keys: dict) -> dict:
    return {k: torch.empty(s, device="meta") for k, s in keys.items()}


def test_deeplabv1_sscb_keys_count_and_checkpoint_format():
    with torch.device("meta"):
        net = build_model("deeplabv1_resnet38")
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {**{"backbone." + k: s for k, s in WIDERESNET38_KEYS.items()}, **SSCB_HEAD}
    assert shapes == expected and len(shapes) == 242
    assert sum(p.numel() for p in net.parameters()) == 124_220_245
    released = meta_dict(expected)  # the sscb file is already in our layout
    assert DeepLabV1.original_model_kwargs(released) == {"backbone": "wideresnet38", "head": "sscb", "num_classes": 21}
    load_state_dict_strict(net, net.import_original_state_dict(released), source="sscb")
    del released["bn_fov2.running_var"]
    with pytest.raises(UserError, match=r"missing 1 \(bn_fov2.running_var\)"):
        load_state_dict_strict(net, net.import_original_state_dict(released), source="sscb")


def test_deeplabv1_psa_head_flat_layout():
    with torch.device("meta"):
        net = build_model("deeplabv1_resnet38", head="psa")
    flat = meta_dict({**WIDERESNET38_KEYS, **PSA_HEAD})
    assert DeepLabV1.original_model_kwargs(flat) == {"backbone": "wideresnet38", "head": "psa", "num_classes": 21}
    load_state_dict_strict(net, net.import_original_state_dict(flat), source="mct")
    assert net.bn_mode == "frozen" and not net.backbone.conv1a.weight.requires_grad
    assert net.backbone.b2.conv_branch2a.weight.requires_grad
    net.train()
    assert not net.backbone.b4.bn_branch2a.training


def test_deeplabv1_bn_modes():
    with torch.device("meta"):
        ref = build_model("deeplabv1_resnet38").train()
    assert ref.bn_mode == "as_reference" and ref.backbone.conv1a.weight.requires_grad  # sscb: conv1a trains
    bns = {n: m for n, m in ref.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert all(m.training and not m.weight.requires_grad and not m.bias.requires_grad for m in bns.values())
    assert bns["backbone.b7.bn_branch2a"].momentum == 0.0003 and bns["bn_fov"].momentum == bns["bn_fov2"].momentum == 0.0003
    grouped = {id(p) for g in ref.param_groups(1e-3, 5e-4) for p in g["params"]}
    assert not grouped & {id(p) for m in bns.values() for p in m.parameters()}
    with pytest.raises(ValueError, match="bn_mode"):
        build_model("deeplabv1_resnet38", backbone="tiny", bn_mode="sync")


def test_deeplabv1_tiny_forward_backward_and_upsampling():
    torch.manual_seed(0)
    net = build_model("deeplabv1_resnet38", backbone="tiny", bn_mode="train").train()
    out = net(torch.randn(2, 3, 64, 64))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 21, 64, 64)
    out["logits"].mean().backward()
    assert net.cls_conv.weight.grad.abs().sum() > 0 and net.backbone.stem[0].weight.grad.abs().sum() > 0
    net.eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        y = F.relu(net.bn_fov(net.conv_fov(net.backbone(x)["out"])))
        y = net.cls_conv(F.relu(net.bn_fov2(net.conv_fov2(y))))
        expected = F.interpolate(y, size=(40, 48), mode="bilinear", align_corners=True)
        torch.testing.assert_close(net(x)["logits"], expected)
    assert net.normalization == IMAGENET_RGB and net.conv_fov.dilation == (12, 12)
    groups = {g["name"]: g["lr_mult"] for g in net.param_groups(1.0, 5e-4)}
    assert groups == {"pretrained_weight": 1, "pretrained_bias": 2, "new_weight": 10, "new_bias": 20}
    psa = build_model("deeplabv1_resnet38", backbone="tiny", head="psa")
    assert {g["name"]: g["lr_mult"] for g in psa.param_groups(1.0, 5e-4)}["new_bias"] == 10
    assert psa(torch.randn(1, 3, 32, 32))["logits"].shape == (1, 21, 32, 32)


def test_largefov_vgg16_forward_keys_and_original_file(tmp_path):
    torch.manual_seed(0)
    net = build_model("deeplab_largefov_vgg16", num_classes=21).train()
    assert net.backbone.fc6.dilation == (12, 12) and net.backbone.frozen == ()
    assert net.normalization == CAFFE_BGR
    out = net(torch.randn(2, 3, 32, 32))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 21, 4, 4)
    out["logits"].mean().backward()
    assert net.backbone.conv1_1.weight.grad is not None and net.fc8_voc12.weight.grad.abs().sum() > 0
    flat = {k: tuple(v.shape) for k, v in net.export_original_state_dict().items()}
    assert flat == {**VGG16_KEYS, "fc8_voc12.weight": (21, 1024, 1, 1), "fc8_voc12.bias": (21,)}
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(s, generator=g) * 0.01 for k, s in flat.items()}
    torch.save({k: v for k, v in sd.items() if not k.startswith("fc8")} |
               {"fc8_voc12.weight": sd["fc8_voc12.weight"][:5], "fc8_voc12.bias": sd["fc8_voc12.bias"][:5]},
               tmp_path / "largefov.pth")
    loaded = load_network(tmp_path / "largefov.pth", model="deeplab_largefov_vgg16")
    assert loaded.num_classes == 5 and torch.equal(loaded.backbone.fc6.weight, sd["fc6.weight"])
    groups = {gr["name"]: gr["lr_mult"] for gr in net.param_groups(1.0, 5e-4)}
    assert groups == {"pretrained_weight": 1, "pretrained_bias": 2, "new_weight": 10, "new_bias": 20}


def test_deeplabv3_keeps_torchvision_keys_and_counts():
    with torch.device("meta"):
        tv = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                 num_classes=21, aux_loss=True)
        ours = build_model("deeplabv3_resnet101")
        plain = build_model("deeplabv3_resnet101", aux_loss=False)
        resnet = torchvision.models.resnet101()
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in tv.state_dict().items()} and len(shapes) == 676
    assert sum(p.numel() for p in ours.parameters()) == 60_996_202
    assert len(plain.state_dict()) == 668 and sum(p.numel() for p in plain.parameters()) == 58_630_997
    assert shapes["classifier.0.convs.1.0.weight"] == (256, 2048, 3, 3)
    assert [ours.classifier[0].convs[i][0].dilation for i in (1, 2, 3)] == [(12, 12), (24, 24), (36, 36)]
    assert DeepLabV3ResNet101.original_model_kwargs(tv.state_dict()) == {"aux_loss": True, "num_classes": 21}
    init = resnet.state_dict()  # torchvision's ImageNet file layout: the backbone keys plus fc.*
    load_state_dict_strict(ours.backbone, init, allow_unexpected=ours.backbone.init_drop, source="resnet101")
    del init["layer3.22.bn3.running_var"]
    with pytest.raises(UserError, match="layer3.22.bn3.running_var"):
        load_state_dict_strict(ours.backbone, init, allow_unexpected=ours.backbone.init_drop, source="resnet101")


def test_deeplabv3_forward_groups_and_torchvision_parity():
    torch.manual_seed(0)
    net = build_model("deeplabv3_resnet101", num_classes=4).train()
    assert net.normalization == IMAGENET_RGB
    out = net(torch.randn(2, 3, 33, 33))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"logits": (2, 4, 33, 33), "aux_logits": (2, 4, 33, 33)}
    (out["logits"].mean() + out["aux_logits"].mean()).backward()
    groups = {g["name"]: g for g in net.param_groups(0.01, 1e-4)}
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {"backbone": 0.01, "classifier": 0.01, "aux_classifier": 0.1})
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    assert sum(len(g["params"]) for g in groups.values()) == len(list(net.parameters()))
    tv = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=4,
                                                             aux_loss=True)
    load_state_dict_strict(net, tv.state_dict(), source="torchvision")
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        theirs, mine = tv.eval()(x), net.eval()(x)
    assert torch.equal(theirs["out"], mine["logits"]) and torch.equal(theirs["aux"], mine["aux_logits"])


def test_deeplabv3_refuses_pixel_supervised_weights():
    with pytest.raises(UserError, match="pixel labels"):
        check_init_weights("DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1")
    check_init_weights("COCO_WITH_VOC_LABELS_V1", allow_pixel_supervised=True)
    check_init_weights("ResNet101_Weights.IMAGENET1K_V1")
