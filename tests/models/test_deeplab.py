"""DeepLab-v2 ResNet-101 + ASPP + MSC: deeplab-pytorch's keys, shapes, MSC merge, ASPP sum, weights, groups."""
import contextlib
import logging

import pytest
import torch
import torch.nn.functional as F

from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.deeplab_v2 import ASPPv2, DeepLabV2, merge_max
from wsss.models.normalization import CAFFE_BGR
from wsss.models.weights import load_backbone_init, load_network, load_state_dict_strict

SMALL = (1, 1, 1, 1)  # one bottleneck per layer: same layout and key pattern, CPU-sized


def dlp_keys(num_classes: int = 21, blocks=(3, 4, 23, 3), prefix: str = "base.", aspp: bool = True) -> dict:
    """deeplab-pytorch's state-dict keys and shapes, written out from retrain.md §1.1 (not from our network)."""
    keys = {}

    def unit(name, cout, cin, k):
        keys[f"{prefix}{name}.conv.weight"] = (cout, cin, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}{name}.bn.{p}"] = (cout,)
        keys[f"{prefix}{name}.bn.num_batches_tracked"] = ()

    unit("layer1.conv1", 64, 3, 7)
    cin = 64
    for layer, n, cout in zip(("layer2", "layer3", "layer4", "layer5"), blocks, (256, 512, 1024, 2048)):
        mid = cout // 4
        for b in range(1, n + 1):
            first = cin if b == 1 else cout
            unit(f"{layer}.block{b}.reduce", mid, first, 1)
            unit(f"{layer}.block{b}.conv3x3", mid, mid, 3)
            unit(f"{layer}.block{b}.increase", cout, mid, 1)
            if b == 1:
                unit(f"{layer}.block{b}.shortcut", cout, first, 1)
        cin = cout
    if aspp:
        for i in range(4):
            keys[f"{prefix}aspp.c{i}.weight"] = (num_classes, 2048, 3, 3)
            keys[f"{prefix}aspp.c{i}.bias"] = (num_classes,)
    return keys


def random_state_dict(keys: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


@contextlib.contextmanager
def wsss_logs(caplog):
    """Capture the ``wsss`` logger (which does not propagate once set up) into ``caplog``."""
    logger = logging.getLogger("wsss")
    with caplog.at_level(logging.INFO, logger="wsss"):
        logger.addHandler(caplog.handler)
        try:
            yield
        finally:
            logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def meta_net():
    with torch.device("meta"):
        return build_model("deeplabv2_resnet101", num_classes=21, msc_scales=(0.5, 0.75))


def test_keys_shapes_and_parameter_count_are_deeplab_pytorchs(meta_net):
    ours = {k: tuple(v.shape) for k, v in DeepLabV2.original_keys(meta_net.state_dict()).items()}
    reference = dlp_keys()
    assert len(reference) == 632 and sum(k.endswith("num_batches_tracked") for k in reference) == 104
    assert ours == reference
    assert ours["base.layer3.block1.reduce.conv.weight"] == (128, 256, 1, 1)
    assert meta_net.backbone.layer3.block1.reduce.conv.stride == (2, 2)
    assert meta_net.backbone.layer3.block1.conv3x3.conv.stride == (1, 1)
    assert sum(p.numel() for p in meta_net.parameters()) == 44_048_532
    assert sum(p.numel() for p in meta_net.aspp.parameters()) == 1_548_372


def test_feature_sizes_follow_the_ceil_mode_pool(meta_net):
    net = meta_net.eval()
    out = net(torch.empty(1, 3, 321, 321, device="meta"))
    sizes = {k: tuple(v.shape[-2:]) for k, v in out.items()}
    assert sizes == {"logits_full": (41, 41), "logits_s0.5": (21, 21), "logits_s0.75": (31, 31), "logits": (41, 41)}
    assert tuple(net(torch.empty(1, 3, 375, 500, device="meta"))["logits"].shape) == (1, 21, 48, 63)
    assert net.backbone.layer1.pool.ceil_mode


def test_small_depth_forward_backward_and_frozen_bn():
    torch.manual_seed(0)
    net = build_model("deeplabv2_resnet101", blocks=SMALL, num_classes=5).train()
    out = net(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits_full": (2, 5, 9, 9), "logits_s0.5": (2, 5, 5, 5), "logits_s0.75": (2, 5, 7, 7),
        "logits": (2, 5, 9, 9)}
    assert all(torch.isfinite(v).all() for v in out.values())
    sum(v.mean() for v in out.values()).backward()
    assert all(net.aspp.get_submodule(f"c{i}").weight.grad.abs().sum() > 0 for i in range(4))
    assert net.backbone.layer1.conv1.conv.weight.grad.abs().sum() > 0
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad and m.momentum == 0.001 for m in bns)
    assert set(build_model("deeplabv2_resnet101", blocks=SMALL, msc_scales=())(torch.randn(1, 3, 32, 32))) == {"logits"}


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[..., i + dy, j + dx] with zeros outside."""
    pad = max(abs(dy), abs(dx))
    xp = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    return xp[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def test_aspp_is_the_sum_of_dilated_convolutions():
    torch.manual_seed(0)
    aspp = ASPPv2(3, 2, rates=(1, 2, 3))
    for conv in aspp.children():
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 7, 6)
    plain = torch.zeros(2, 2, 7, 6)
    for conv, rate in zip(aspp.children(), (1, 2, 3)):
        plain += conv.bias[None, :, None, None]
        for ky in range(3):
            for kx in range(3):
                tap = shifted(x, (ky - 1) * rate, (kx - 1) * rate)
                plain += torch.einsum("oc,bchw->bohw", conv.weight[:, :, ky, kx], tap)
    torch.testing.assert_close(aspp(x), plain, rtol=1e-5, atol=1e-5)
    big = ASPPv2(256, 21)
    assert big.rates == (6, 12, 18, 24) and [c.dilation for c in big.children()] == [(r, r) for r in big.rates]
    assert float(big.c0.weight.detach().std()) == pytest.approx(0.01, rel=0.05) and big.c3.bias.abs().sum() == 0


def test_msc_merge_is_the_max_over_upsampled_scales():
    full = torch.zeros(1, 1, 4, 4)
    half = torch.full((1, 1, 2, 2), -1.0)
    half[..., 0, 0] = 3.0  # its top-left quadrant wins after bilinear upsampling
    merged = merge_max([full, half])
    up = F.interpolate(half, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.equal(merged, torch.maximum(full, up)) and merged[0, 0, 0, 0] == 3 and merged[0, 0, 3, 3] == 0
    torch.manual_seed(0)
    net = build_model("deeplabv2_resnet101", backbone="tiny", num_classes=3).eval()
    x = torch.randn(1, 3, 45, 37)  # odd sizes: scale_factor (grid spacing 1/s) and size= resizing differ
    with torch.no_grad():
        out = net(x)
        for scale in (0.5, 0.75):
            scaled = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[f"logits_s{scale:g}"], net.base_logits(scaled))
            by_size = F.interpolate(x, size=scaled.shape[-2:], mode="bilinear", align_corners=False)
            assert not torch.allclose(scaled, by_size)
        torch.testing.assert_close(out["logits_full"], net.base_logits(x))
    maps = [out["logits_full"], out["logits_s0.5"], out["logits_s0.75"]]
    size = maps[0].shape[-2:]
    stacked = torch.stack([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps])
    assert torch.equal(out["logits"], stacked.amax(0))
    with pytest.raises(ValueError, match="MSC scale"):
        build_model("deeplabv2_resnet101", backbone="tiny", msc_scales=(0.5, 0.0))


def test_param_groups_as_deeplab_pytorch():
    net = build_model("deeplabv2_resnet101", blocks=SMALL)
    groups = {g["name"]: g for g in net.param_groups(2.5e-4, 5e-4)}
    assert set(groups) == {"pretrained_weight", "new_weight", "new_bias"}
    assert (groups["new_weight"]["lr"], groups["new_bias"]["lr"]) == pytest.approx((2.5e-3, 5e-3))
    assert groups["new_bias"]["weight_decay"] == 0 and groups["new_weight"]["weight_decay"] == 5e-4
    convs = [m.weight for n, m in net.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for p in groups["pretrained_weight"]["params"]} == {id(p) for p in convs}
    assert net.normalization == CAFFE_BGR and net.backbone.normalization == CAFFE_BGR


def test_released_checkpoint_loads_strictly_with_or_without_base(tmp_path, caplog):
    sd = random_state_dict(dlp_keys(blocks=SMALL))
    path = tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth"
    torch.save(sd, path)
    with wsss_logs(caplog):
        net = load_network(path, model="deeplabv2_resnet101")
    assert "prefix 'base.'" in caplog.text
    assert net.backbone.blocks == SMALL and net.num_classes == 21
    assert all(torch.equal(v, sd[k]) for k, v in net.export_original_state_dict().items())
    bare = tmp_path / "bare.pth"
    torch.save({k[len("base."):]: v for k, v in sd.items()}, bare)
    again = load_network(bare, model="deeplabv2_resnet101")
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(net(x)["logits"], again(x)["logits"])


def test_renamed_or_mixed_keys_fail_naming_the_key(tmp_path):
    sd = random_state_dict(dlp_keys(blocks=SMALL))
    sd["base.layer2.block1.reduce.conv.kernel"] = sd.pop("base.layer2.block1.reduce.conv.weight")
    torch.save(sd, tmp_path / "renamed.pth")
    with pytest.raises(UserError, match=r"missing 1 \(backbone.layer2.block1.reduce.conv.weight\).*"
                                        r"unexpected 1 \(backbone.layer2.block1.reduce.conv.kernel\)"):
        load_network(tmp_path / "renamed.pth", model="deeplabv2_resnet101")
    mixed = random_state_dict(dlp_keys(blocks=SMALL))
    mixed["aspp.c0.bias"] = mixed.pop("base.aspp.c0.bias")
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match="'aspp.c0.bias'"):
        load_network(tmp_path / "mixed.pth", model="deeplabv2_resnet101")


def test_coco_init_drops_exactly_fc_and_logs_it(tmp_path, caplog):
    keys = dlp_keys(blocks=SMALL, prefix="", aspp=False)
    sd = {**random_state_dict(keys), "fc.weight": torch.randn(91, 2048, 1, 1), "fc.bias": torch.randn(91)}
    torch.save(sd, tmp_path / "deeplabv1_resnet101-coco.pth")
    net = build_model("deeplabv2_resnet101", blocks=SMALL)
    aspp_before = net.aspp.c0.weight.clone()
    with wsss_logs(caplog):
        load_backbone_init(net.backbone, tmp_path / "deeplabv1_resnet101-coco.pth")
    assert "dropped 2 (fc.weight, fc.bias)" in caplog.text
    assert torch.equal(net.backbone.layer5.block1.increase.bn.running_var, sd["layer5.block1.increase.bn.running_var"])
    assert torch.equal(net.aspp.c0.weight, aspp_before)
    del sd["layer4.block1.conv3x3.conv.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(UserError, match=r"missing 1 \(layer4.block1.conv3x3.conv.weight\)"):
        load_backbone_init(net.backbone, tmp_path / "broken.pth")


def test_full_size_coco_init_key_check_on_meta(meta_net):
    keys = dlp_keys(prefix="", aspp=False)
    sd = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    sd.update({"fc.weight": torch.empty(91, 2048, 1, 1, device="meta"), "fc.bias": torch.empty(91, device="meta")})
    assert len(sd) == 626
    load_state_dict_strict(meta_net.backbone, sd, allow_unexpected=meta_net.backbone.init_drop, source="coco")
    del sd["layer4.block23.increase.bn.running_mean"]
    with pytest.raises(UserError, match="layer4.block23.increase.bn.running_mean"):
        load_state_dict_strict(meta_net.backbone, sd, allow_unexpected=meta_net.backbone.init_drop, source="coco")
    full = {k: torch.empty(s, device="meta") for k, s in dlp_keys().items()}
    assert DeepLabV2.original_model_kwargs(full) == {"backbone": "resnet101_caffe", "num_classes": 21}
    load_state_dict_strict(meta_net, meta_net.import_original_state_dict(full), source="released")


@pytest.mark.slow
def test_full_size_released_checkpoint_loads_strictly(tmp_path):
    sd = random_state_dict(dlp_keys())
    torch.save(sd, tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth")
    net = load_network(tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth", model="deeplabv2_resnet101")
    exported = net.export_original_state_dict()
    assert exported.keys() == sd.keys() and all(torch.equal(exported[k], v) for k, v in sd.items())
    with torch.no_grad():
        assert tuple(net(torch.randn(1, 3, 65, 65))["logits"].shape) == (1, 21, 9, 9)
