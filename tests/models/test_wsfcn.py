"""WS-FCN: FCA, flow alignment and SF2 against plain formulations and hand values, the dead FCA taps, BN modes,
shapes of a 321 crop (meta device), forward/backward on the tiny backbone, and the released
``model_enc_e018Xs0.905.pth`` layout (spec seam_wsfcn.md B3b: 355 keys) loading strictly."""
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from tests.models.reference_keys import WIDERESNET38_KEYS
from tests.models.test_single_stage import PAMR_KERNELS, labels_for
from wsss.errors import UserError
from wsss.models.registry import build_model
from wsss.models.single_stage import SingleStageNet, SingleStageTrainModule
from wsss.models.single_stage_modules import FrozenStatsBatchNorm2d
from wsss.models.single_stage_reference import convert_reference_state_dict, reference_model_type
from wsss.models.weights import load_network, load_state_dict_strict

# The decoder part of the released file, in its order: names from WS-FCN's models (align1 = AlignModule(256, 128),
# sf2 = SF2, fca = FCA(4096), _aff = PAMR, last_conv), shapes from seam_wsfcn.md B3-B5. "BN(c)" = weight, bias,
# running_mean, running_var (c,) and num_batches_tracked (); "CONV+BIAS(o, i, k, k)" = weight (o, i, k, k), bias (o,).
DECODER_LAYOUT = """
align1.down_h.weight (128, 256, 1, 1)
align1.down_l.weight (128, 256, 1, 1)
align1.flow_make.weight (2, 256, 3, 3)
sf2.conv1h CONV+BIAS(256, 256, 3, 3)
sf2.bn1h BN(256)
sf2.conv2h CONV+BIAS(256, 256, 3, 3)
sf2.bn2h BN(256)
sf2.conv3h CONV+BIAS(256, 256, 3, 3)
sf2.bn3h BN(256)
sf2.conv4h CONV+BIAS(256, 256, 3, 3)
sf2.bn4h BN(256)
sf2.conv1v CONV+BIAS(256, 256, 3, 3)
sf2.bn1v BN(256)
sf2.conv2v CONV+BIAS(256, 256, 3, 3)
sf2.bn2v BN(256)
sf2.conv3v CONV+BIAS(256, 256, 3, 3)
sf2.bn3v BN(256)
sf2.conv4v CONV+BIAS(256, 256, 3, 3)
sf2.bn4v BN(256)
fca.sa.conv.weight (1, 2, 3, 3)
fca.ca.sharedMLP.0.weight (256, 256, 1, 1)
fca.ca.sharedMLP.2.weight (256, 256, 1, 1)
fca.fca1.conv1_1.weight (256, 4096, 1, 1)
fca.fca1.conv1_2.weight (256, 256, 1, 1)
fca.fca1.bn BN(256)
fca.fca1.conv2_1.weight (256, 4096, 1, 1)
fca.fca1.conv2_2.weight (256, 256, 1, 1)
fca.fca2.conv1_1.weight (256, 4096, 3, 1)
fca.fca2.conv1_2.weight (256, 256, 1, 3)
fca.fca2.bn BN(256)
fca.fca2.conv2_1.weight (256, 4096, 1, 3)
fca.fca2.conv2_2.weight (256, 256, 3, 1)
fca.fca3.conv1_1.weight (256, 4096, 5, 1)
fca.fca3.conv1_2.weight (256, 256, 1, 5)
fca.fca3.bn BN(256)
fca.fca3.conv2_1.weight (256, 4096, 1, 5)
fca.fca3.conv2_2.weight (256, 256, 5, 1)
fca.fca4.conv1_1.weight (256, 4096, 7, 1)
fca.fca4.conv1_2.weight (256, 256, 1, 7)
fca.fca4.bn BN(256)
fca.fca4.conv2_1.weight (256, 4096, 1, 7)
fca.fca4.conv2_2.weight (256, 256, 7, 1)
fca.global_avg_pool.1.weight (256, 4096, 1, 1)
fca.global_avg_pool.2 BN(256)
fca.conv1.weight (256, 1280, 1, 1)
fca.bn1 BN(256)
_aff.aff_x.kernel (8, 1, 3, 3)
_aff.aff_m.kernel (8, 1, 3, 3)
_aff.aff_std.kernel (9, 1, 3, 3)
last_conv.0.weight (256, 256, 3, 3)
last_conv.1 BN(256)
last_conv.4.weight (256, 256, 3, 3)
last_conv.5 BN(256)
last_conv.8.weight (20, 256, 1, 1)
last_conv.8.bias (20,)
"""


def released_layout() -> list[tuple[str, tuple]]:
    """(key, shape) of ``model_enc_e018Xs0.905.pth`` in order: the 228 WideResNet-38 keys, then the decoder."""
    out = list(WIDERESNET38_KEYS.items())
    for line in DECODER_LAYOUT.strip().splitlines():
        name, shape = line.split(" ", 1)
        dims = tuple(int(v) for v in shape[shape.index("(") + 1:-1].split(",") if v.strip())
        if shape.startswith("BN("):
            out += [(f"{name}.{p}", dims) for p in ("weight", "bias", "running_mean", "running_var")]
            out.append((f"{name}.num_batches_tracked", ()))
        elif shape.startswith("CONV+BIAS("):
            out += [(f"{name}.weight", dims), (f"{name}.bias", dims[:1])]
        else:
            out.append((name, dims))
    return out


def released_state_dict(device: str = "cpu") -> dict:
    """Random values in the released key format (fixed PAMR kernels, int64 BN counters)."""
    gen = torch.Generator().manual_seed(0)
    special = {**PAMR_KERNELS, **{k: lambda: torch.tensor(11898) for k, _ in released_layout()
                                  if k.endswith("num_batches_tracked")}}
    draw = (lambda shape: torch.empty(shape, device="meta")) if device == "meta" else \
        (lambda shape: torch.rand(shape, generator=gen) * 0.01)
    return {key: special[key]() if key in special else draw(shape) for key, shape in released_layout()}


@pytest.fixture(scope="module")
def meta_net():
    with torch.device("meta"):
        return build_model("wsfcn", backbone="wideresnet38")


# ------------------------------------------------------------------------------------------------ released weights
def test_released_layout_has_355_keys_and_the_published_size():
    layout = released_layout()
    assert len(layout) == 355 and len({k for k, _ in layout}) == 355
    assert sum(torch.Size(s).numel() for _, s in layout) == 148_269_820
    tops = [key.split(".")[0] for key, _ in layout]
    parts = Counter(top if top in ("align1", "sf2", "fca", "_aff", "last_conv") else "backbone" for top in tops)
    assert parts == {"backbone": 228, "align1": 3, "sf2": 56, "fca": 51, "_aff": 3, "last_conv": 14}
    assert len([k for k, _ in layout if k.startswith("fca.fca") and ".bn." in k]) == 20


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_released_layout_maps_onto_our_network_strictly(meta_net):
    state = released_state_dict(device="meta")
    assert reference_model_type(state) == "wsfcn"
    converted = meta_net.import_original_state_dict(state)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape)
                                                                 for k, v in meta_net.state_dict().items()}
    load_state_dict_strict(meta_net, converted, source="released.pth")
    assert meta_net.original_model_kwargs(state) == {"backbone": "wideresnet38", "num_classes": 21}


def test_export_is_the_inverse_of_import(meta_net):
    exported = meta_net.export_original_state_dict()
    assert [(k, tuple(v.shape)) for k, v in exported.items()] == released_layout()


@pytest.mark.filterwarnings("ignore:.*meta parameter")
@pytest.mark.parametrize("change,message", [
    (lambda s: s.__setitem__("sf2.conv3v.weights", s.pop("sf2.conv3v.weight")),
     r"missing 1 \(sf2\.conv3v\.weight\).*unexpected 1 \(sf2\.conv3v\.weights\)"),
    (lambda s: s.pop("fca.fca4.bn.running_var"), r"missing 1 \(fca\.fca4\.bn\.running_var\)"),
    (lambda s: s.__setitem__("fca.fca3.conv1_1.weight", torch.empty(256, 4096, 3, 1, device="meta")),
     r"mis-shaped .*fca\.fca3\.conv1_1\.weight \(256, 4096, 3, 1\) vs \(256, 4096, 5, 1\)"),
])
def test_renamed_missing_or_misshaped_key_fails_naming_it(meta_net, change, message):
    state = released_state_dict(device="meta")
    change(state)
    with pytest.raises(UserError, match=r"released\.pth: .*" + message):
        load_state_dict_strict(meta_net, meta_net.import_original_state_dict(state), source="released.pth")


def test_wsfcn_and_single_stage_files_are_told_apart():
    state = released_state_dict(device="meta")
    with pytest.raises(UserError, match="'wsfcn' network, not 'single_stage'"):
        convert_reference_state_dict(state, model="ae")
    single = build_model("single_stage", backbone="tiny").export_original_state_dict()
    assert reference_model_type(single) == "ae"
    with pytest.raises(UserError, match="'single_stage' network, not 'wsfcn'"):
        convert_reference_state_dict(single, model="wsfcn")


@pytest.mark.slow
def test_released_format_file_loads_strictly_on_cpu(tmp_path):
    path = tmp_path / "model_enc_e018Xs0.905.pth"
    state = released_state_dict()
    torch.save(state, path)
    ours = load_network(path, model="wsfcn").state_dict()
    pairs = {"align1.flow_make.weight": "align.flow_make.weight", "sf2.bn4v.running_var": "sf2.bn4v.running_var",
             "fca.fca2.bn.bias": "fca.fca2.bn.bias", "last_conv.8.bias": "head.8.bias",
             "b4_3.conv_branch2a.weight": "backbone.b4_3.conv_branch2a.weight"}
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], state[theirs])
    state["fca.conv1.weights"] = state.pop("fca.conv1.weight")
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing 1 \(fca\.conv1\.weight\)"):
        load_network(path, model="wsfcn")


def test_tiny_network_roundtrips_through_the_original_layout(tmp_path):
    torch.manual_seed(0)
    net = build_model("wsfcn", backbone="tiny").eval()
    path = tmp_path / "model_enc_e001Xs0.500.pth"
    torch.save(net.export_original_state_dict(), path)
    loaded = load_network(path, model="wsfcn")  # backbone and class count read from the file
    assert loaded.backbone_name == "tiny" and loaded.num_classes == 21
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image)["masks"], net(image)["masks"])
    with pytest.raises(UserError, match="'wsfcn' network, not 'single_stage'"):
        load_network(path, model="single_stage")


# ------------------------------------------------------------------------------------------------------ network
def test_321_crop_shapes_on_meta(meta_net):
    """B6: conv6 41^2 -> FCA (256, 41^2) -> align (256, 81^2) -> SF2 two (256, 81^2) -> head (20, 81^2)."""
    seen = {}
    hooks = [getattr(meta_net, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name in ("fca", "align", "sf2", "gate", "head")]
    meta_net.eval()
    try:
        with torch.no_grad():
            out = meta_net(torch.empty(2, 3, 321, 321, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["fca"].shape == (2, 256, 41, 41) and seen["align"].shape == (2, 256, 81, 81)
    assert [t.shape for t in seen["sf2"]] == [(2, 256, 81, 81)] * 2 and seen["head"].shape == (2, 20, 81, 81)
    assert out["scores"].shape == (2, 20) and out["masks"].shape == (2, 21, 321, 321)


@pytest.mark.parametrize("part,millions", [
    ("fca.fca1", "2.23"), ("fca.fca2", "6.69"), ("fca.fca3", "11.14"), ("fca.fca4", "15.60"), ("fca.ca", "0.13"),
    ("fca.global_avg_pool", "1.05"), ("fca", "37.16"), ("align", "0.070"), ("sf2", "4.725"), ("head", "1.186"),
    ("", "148.21")])
def test_parameter_counts_of_the_reference(meta_net, part, millions):
    """B6's table (verified on the reference), to the digits it gives."""
    count = sum(p.numel() for p in meta_net.get_submodule(part).parameters())
    assert f"{count / 1e6:.{len(millions.split('.')[1])}f}" == millions


def test_bn_modes(meta_net):
    """B5: SF2 and head BNs use batch statistics; FCA BNs frozen statistics; backbone BNs frozen entirely."""
    meta_net.train()
    batch_stats = {n for n, m in meta_net.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training}
    assert batch_stats == {f"sf2.bn{i}{s}" for i in range(1, 5) for s in "hv"} | {"head.1", "head.5"}
    frozen_stats = {n for n, m in meta_net.named_modules() if isinstance(m, FrozenStatsBatchNorm2d)}
    assert frozen_stats == {f"fca.fca{i}.bn" for i in range(1, 5)} | {"fca.global_avg_pool.2", "fca.bn1"}
    backbone_bns = [m for m in meta_net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert backbone_bns and not any(m.training or m.weight.requires_grad for m in backbone_bns)


def test_param_groups_use_the_wsfcn_multipliers(meta_net):
    """B9: backbone weights 35 at lr, no backbone biases, new weights 51 at 20 lr, new biases 25 at 40 lr."""
    groups = [(g["name"], len(g["params"]), g["lr"], g["weight_decay"]) for g in meta_net.param_groups(1e-3, 5e-4)]
    assert groups == [("pretrained_weight", 35, 1e-3, 5e-4), ("new_weight", 51, pytest.approx(2e-2), 5e-4),
                      ("new_bias", 25, pytest.approx(4e-2), 0.0)]


def test_the_decoder_seam_replaces_context_and_fusion_only():
    torch.manual_seed(0)
    net = build_model("wsfcn", backbone="tiny").eval()
    assert type(net).mask_logits is SingleStageNet.mask_logits and type(net).forward is SingleStageNet.forward
    assert not any(hasattr(net, name) for name in ("aspp", "gci", "skip_proj", "fuse"))
    seen = {}
    net.sf2.register_forward_hook(lambda m, i, o: seen.__setitem__("sf2", o))
    net.gate.register_forward_hook(lambda m, i, o: seen.__setitem__("gate", i))
    with torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    assert seen["gate"][0] is seen["sf2"][1] and seen["gate"][1] is seen["sf2"][0]  # gate(deep = v4, shallow = h4)


def test_wsfcn_forward_backward_on_tiny():
    torch.manual_seed(0)
    net = build_model("wsfcn", backbone="tiny").train()
    labels = labels_for(2)
    out = net(torch.randn(2, 3, 64, 64), labels=labels)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "scores": (2, 20), "masks": (2, 21, 64, 64), "refined": (2, 21, 64, 64), "logits": (2, 21, 16, 16),
        "pseudo_gt": (2, 21, 64, 64), "mask_loss": (2,), "fg_mass": (2,)}
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (out["logits"][:, 0] == 1.0).all() and out["masks"][0, 1:][labels[0] == 0].abs().sum() == 0
    assert net.fca.bn1.running_mean.abs().sum() == 0 and net.sf2.bn1h.running_mean.abs().sum() > 0
    (F.multilabel_soft_margin_loss(out["scores"], labels) + out["mask_loss"].sum()).backward()
    params = dict(net.named_parameters())
    for name in ("backbone.stem.0.weight", "fca.conv1.weight", "fca.ca.sharedMLP.0.weight", "fca.sa.conv.weight",
                 "fca.fca4.conv2_2.weight", "align.down_l.weight", "align.flow_make.weight", "sf2.conv1h.bias",
                 "sf2.bn4v.weight", "head.8.bias"):
        assert params[name].grad is not None and torch.isfinite(params[name].grad).all(), name
        assert params[name].grad.abs().sum() > 0, name
    assert params["fca.fca1.bn.weight"].grad is None  # defined, never used (as the reference)


def test_train_module_warm_up_of_seven_epochs():
    torch.manual_seed(0)
    module = SingleStageTrainModule(build_model("wsfcn", backbone="tiny").eval(), warmup_epochs=7)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": labels_for(2)}
    module.set_epoch(6)
    early = module(batch)
    torch.testing.assert_close(early["loss"], early["loss_cls"])
    module.set_epoch(7)
    late = module(batch)
    torch.testing.assert_close(late["loss"], late["loss_cls"] + late["loss_mask"])


def test_bad_labels_and_classes():
    net = build_model("wsfcn", backbone="tiny")
    with pytest.raises(ValueError, match=r"labels must be \(B, 20\)"):
        net(torch.randn(1, 3, 32, 32), labels=torch.zeros(1, 21))
    with pytest.raises(ValueError, match="wsfcn: num_classes"):
        build_model("wsfcn", backbone="tiny", num_classes=1)
