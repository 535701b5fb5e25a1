"""Single-stage network: modules, forward/backward on the tiny backbone, the train module's warm-up rule, and the
released checkpoint's layout (Appendix A of the reference spec: 309 keys) loading strictly."""
import re

import pytest
import torch

from wsss.errors import UserError
from wsss.models.registry import build_model
from wsss.models.single_stage import SingleStageTrainModule, denormalize
from wsss.models.single_stage_modules import ASPP, FrozenStatsBatchNorm2d, GlobalCueInjection, StochasticGate, \
    stochastic_gate
from wsss.models.single_stage_reference import convert_reference_state_dict, export_reference_state_dict, \
    reference_model_kwargs
from wsss.models.weights import load_network, load_state_dict_strict
from wsss.models.normalization import normalization_for
from wsss.ops.pamr import difference_kernel, neighbour_kernel, window_kernel

# Appendix A of reference/single_stage.md: the released model_enc_e020Xs0.928.pth (WideResNet-38 + ae), in order.
RELEASED_KEYS = """
conv1a.weight (64, 3, 3, 3)
b2.bn_branch2a.{weight,bias,running_mean,running_var} (64,) + b2.bn_branch2a.num_batches_tracked ()
b2.conv_branch2a.weight (128, 64, 3, 3)
b2.bn_branch2b1.{weight,bias,running_mean,running_var} (128,) + b2.bn_branch2b1.num_batches_tracked ()
b2.conv_branch2b1.weight (128, 128, 3, 3)
b2.conv_branch1.weight (128, 64, 1, 1)
b2_1.bn_branch2a.{weight,bias,running_mean,running_var} (128,) + b2_1.bn_branch2a.num_batches_tracked ()
b2_1.conv_branch2a.weight (128, 128, 3, 3)
b2_1.bn_branch2b1.{weight,bias,running_mean,running_var} (128,) + b2_1.bn_branch2b1.num_batches_tracked ()
b2_1.conv_branch2b1.weight (128, 128, 3, 3)
b2_2.bn_branch2a.{weight,bias,running_mean,running_var} (128,) + b2_2.bn_branch2a.num_batches_tracked ()
b2_2.conv_branch2a.weight (128, 128, 3, 3)
b2_2.bn_branch2b1.{weight,bias,running_mean,running_var} (128,) + b2_2.bn_branch2b1.num_batches_tracked ()
b2_2.conv_branch2b1.weight (128, 128, 3, 3)
b3.bn_branch2a.{weight,bias,running_mean,running_var} (128,) + b3.bn_branch2a.num_batches_tracked ()
b3.conv_branch2a.weight (256, 128, 3, 3)
b3.bn_branch2b1.{weight,bias,running_mean,running_var} (256,) + b3.bn_branch2b1.num_batches_tracked ()
b3.conv_branch2b1.weight (256, 256, 3, 3)
b3.conv_branch1.weight (256, 128, 1, 1)
b3_1.bn_branch2a.{weight,bias,running_mean,running_var} (256,) + b3_1.bn_branch2a.num_batches_tracked ()
b3_1.conv_branch2a.weight (256, 256, 3, 3)
b3_1.bn_branch2b1.{weight,bias,running_mean,running_var} (256,) + b3_1.bn_branch2b1.num_batches_tracked ()
b3_1.conv_branch2b1.weight (256, 256, 3, 3)
b3_2.bn_branch2a.{weight,bias,running_mean,running_var} (256,) + b3_2.bn_branch2a.num_batches_tracked ()
b3_2.conv_branch2a.weight (256, 256, 3, 3)
b3_2.bn_branch2b1.{weight,bias,running_mean,running_var} (256,) + b3_2.bn_branch2b1.num_batches_tracked ()
b3_2.conv_branch2b1.weight (256, 256, 3, 3)
b4.bn_branch2a.{weight,bias,running_mean,running_var} (256,) + b4.bn_branch2a.num_batches_tracked ()
b4.conv_branch2a.weight (512, 256, 3, 3)
b4.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4.bn_branch2b1.num_batches_tracked ()
b4.conv_branch2b1.weight (512, 512, 3, 3)
b4.conv_branch1.weight (512, 256, 1, 1)
b4_1.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b4_1.bn_branch2a.num_batches_tracked ()
b4_1.conv_branch2a.weight (512, 512, 3, 3)
b4_1.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4_1.bn_branch2b1.num_batches_tracked ()
b4_1.conv_branch2b1.weight (512, 512, 3, 3)
b4_2.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b4_2.bn_branch2a.num_batches_tracked ()
b4_2.conv_branch2a.weight (512, 512, 3, 3)
b4_2.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4_2.bn_branch2b1.num_batches_tracked ()
b4_2.conv_branch2b1.weight (512, 512, 3, 3)
b4_3.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b4_3.bn_branch2a.num_batches_tracked ()
b4_3.conv_branch2a.weight (512, 512, 3, 3)
b4_3.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4_3.bn_branch2b1.num_batches_tracked ()
b4_3.conv_branch2b1.weight (512, 512, 3, 3)
b4_4.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b4_4.bn_branch2a.num_batches_tracked ()
b4_4.conv_branch2a.weight (512, 512, 3, 3)
b4_4.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4_4.bn_branch2b1.num_batches_tracked ()
b4_4.conv_branch2b1.weight (512, 512, 3, 3)
b4_5.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b4_5.bn_branch2a.num_batches_tracked ()
b4_5.conv_branch2a.weight (512, 512, 3, 3)
b4_5.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b4_5.bn_branch2b1.num_batches_tracked ()
b4_5.conv_branch2b1.weight (512, 512, 3, 3)
b5.bn_branch2a.{weight,bias,running_mean,running_var} (512,) + b5.bn_branch2a.num_batches_tracked ()
b5.conv_branch2a.weight (512, 512, 3, 3)
b5.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b5.bn_branch2b1.num_batches_tracked ()
b5.conv_branch2b1.weight (1024, 512, 3, 3)
b5.conv_branch1.weight (1024, 512, 1, 1)
b5_1.bn_branch2a.{weight,bias,running_mean,running_var} (1024,) + b5_1.bn_branch2a.num_batches_tracked ()
b5_1.conv_branch2a.weight (512, 1024, 3, 3)
b5_1.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b5_1.bn_branch2b1.num_batches_tracked ()
b5_1.conv_branch2b1.weight (1024, 512, 3, 3)
b5_2.bn_branch2a.{weight,bias,running_mean,running_var} (1024,) + b5_2.bn_branch2a.num_batches_tracked ()
b5_2.conv_branch2a.weight (512, 1024, 3, 3)
b5_2.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b5_2.bn_branch2b1.num_batches_tracked ()
b5_2.conv_branch2b1.weight (1024, 512, 3, 3)
b6.bn_branch2a.{weight,bias,running_mean,running_var} (1024,) + b6.bn_branch2a.num_batches_tracked ()
b6.conv_branch2a.weight (512, 1024, 1, 1)
b6.bn_branch2b1.{weight,bias,running_mean,running_var} (512,) + b6.bn_branch2b1.num_batches_tracked ()
b6.conv_branch2b1.weight (1024, 512, 3, 3)
b6.bn_branch2b2.{weight,bias,running_mean,running_var} (1024,) + b6.bn_branch2b2.num_batches_tracked ()
b6.conv_branch2b2.weight (2048, 1024, 1, 1)
b6.conv_branch1.weight (2048, 1024, 1, 1)
b7.bn_branch2a.{weight,bias,running_mean,running_var} (2048,) + b7.bn_branch2a.num_batches_tracked ()
b7.conv_branch2a.weight (1024, 2048, 1, 1)
b7.bn_branch2b1.{weight,bias,running_mean,running_var} (1024,) + b7.bn_branch2b1.num_batches_tracked ()
b7.conv_branch2b1.weight (2048, 1024, 3, 3)
b7.bn_branch2b2.{weight,bias,running_mean,running_var} (2048,) + b7.bn_branch2b2.num_batches_tracked ()
b7.conv_branch2b2.weight (4096, 2048, 1, 1)
b7.conv_branch1.weight (4096, 2048, 1, 1)
bn7.{weight,bias,running_mean,running_var} (4096,) + bn7.num_batches_tracked ()
aspp.aspp1.atrous_conv.weight (256, 4096, 1, 1)
aspp.aspp1.bn.{weight,bias,running_mean,running_var} (256,) + aspp.aspp1.bn.num_batches_tracked ()
aspp.aspp2.atrous_conv.weight (256, 4096, 3, 3)
aspp.aspp2.bn.{weight,bias,running_mean,running_var} (256,) + aspp.aspp2.bn.num_batches_tracked ()
aspp.aspp3.atrous_conv.weight (256, 4096, 3, 3)
aspp.aspp3.bn.{weight,bias,running_mean,running_var} (256,) + aspp.aspp3.bn.num_batches_tracked ()
aspp.aspp4.atrous_conv.weight (256, 4096, 3, 3)
aspp.aspp4.bn.{weight,bias,running_mean,running_var} (256,) + aspp.aspp4.bn.num_batches_tracked ()
aspp.global_avg_pool.1.weight (256, 4096, 1, 1)
aspp.global_avg_pool.2.{weight,bias,running_mean,running_var} (256,) + aspp.global_avg_pool.2.num_batches_tracked ()
aspp.conv1.weight (256, 1280, 1, 1)
aspp.bn1.{weight,bias,running_mean,running_var} (256,) + aspp.bn1.num_batches_tracked ()
_aff.aff_x.kernel (8, 1, 3, 3)
_aff.aff_m.kernel (8, 1, 3, 3)
_aff.aff_std.kernel (9, 1, 3, 3)
shallow_mask.fc_deep.0.weight (512, 256, 1, 1)
shallow_mask.fc_deep.1.{weight,bias,running_mean,running_var} (512,) + shallow_mask.fc_deep.1.num_batches_tracked ()
shallow_mask.fc_skip.0.weight (256, 256, 1, 1)
shallow_mask.fc_skip.1.{running_mean,running_var} (256,) + shallow_mask.fc_skip.1.num_batches_tracked ()  [affine=False: no weight/bias]
shallow_mask.fc_cls.0.weight (256, 256, 1, 1)
shallow_mask.fc_cls.1.{weight,bias,running_mean,running_var} (256,) + shallow_mask.fc_cls.1.num_batches_tracked ()
fc8_skip.0.weight (48, 256, 1, 1)
fc8_skip.1.{weight,bias,running_mean,running_var} (48,) + fc8_skip.1.num_batches_tracked ()
fc8_x.0.weight (256, 304, 3, 3)
fc8_x.1.{weight,bias,running_mean,running_var} (256,) + fc8_x.1.num_batches_tracked ()
last_conv.0.weight (256, 256, 3, 3)
last_conv.1.{weight,bias,running_mean,running_var} (256,) + last_conv.1.num_batches_tracked ()
last_conv.4.weight (256, 256, 3, 3)
last_conv.5.{weight,bias,running_mean,running_var} (256,) + last_conv.5.num_batches_tracked ()
last_conv.8.weight (20, 256, 1, 1)
last_conv.8.bias (20,)"""


def released_layout() -> list[tuple[str, tuple]]:
    """(key, shape) for all keys of Appendix A, BN shorthand expanded."""
    out = []
    for line in RELEASED_KEYS.strip().splitlines():
        line = re.sub(r"\s*\[.*\]\s*$", "", line)
        bn = re.match(r"(\S+)\.\{([^}]*)\} \(([^)]*)\) \+ (\S+) \(\)$", line)
        if bn:
            prefix, names, shape, counter = bn.groups()
            out += [(f"{prefix}.{n}", _shape(shape)) for n in names.split(",")] + [(counter, ())]
        else:
            key, shape = re.match(r"(\S+) \(([^)]*)\)$", line).groups()
            out.append((key, _shape(shape)))
    return out


def _shape(text: str) -> tuple:
    return tuple(int(v) for v in text.split(",") if v.strip())


PAMR_KERNELS = {"_aff.aff_x.kernel": difference_kernel, "_aff.aff_m.kernel": neighbour_kernel,
                "_aff.aff_std.kernel": window_kernel}


def released_state_dict(device: str = "cpu", seed: int = 0) -> dict:
    """Random values in the released key format (fixed PAMR kernels, int64 BN counters)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in released_layout():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(13220)
        elif key in PAMR_KERNELS:
            state[key] = PAMR_KERNELS[key]()
        elif device == "meta":
            state[key] = torch.empty(shape, device="meta")
        else:
            state[key] = torch.rand(shape, generator=gen) * 0.01
    return state


def labels_for(batch: int, classes: int = 20) -> torch.Tensor:
    labels = torch.zeros(batch, classes)
    labels[0, 3] = 1
    labels[-1, [1, 5]] = 1
    return labels


def test_appendix_has_309_keys_and_the_published_size():
    layout = released_layout()
    assert len(layout) == 309 and len({k for k, _ in layout}) == 309
    assert sum(torch.Size(s).numel() for _, s in layout) == 138_027_943


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_released_layout_maps_onto_our_network_strictly():
    with torch.device("meta"):
        net = build_model("single_stage", backbone="wideresnet38")
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    converted = net.import_original_state_dict(released_state_dict(device="meta"))
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    load_state_dict_strict(net, converted, source="released.pth")
    assert reference_model_kwargs(converted_back(net), model="ae") == {"backbone": "wideresnet38", "num_classes": 21}
    assert net.original_model_kwargs(released_state_dict(device="meta")) == {"backbone": "wideresnet38",
                                                                            "num_classes": 21}


def converted_back(net) -> dict:
    return export_reference_state_dict(net.state_dict(), model="ae")


def test_export_is_the_inverse_of_import():
    with torch.device("meta"):
        net = build_model("single_stage", backbone="wideresnet38")
    exported = converted_back(net)
    assert [(k, tuple(v.shape)) for k, v in exported.items()] == released_layout()


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_renamed_key_fails_clearly():
    with torch.device("meta"):
        net = build_model("single_stage", backbone="wideresnet38")
    state = released_state_dict(device="meta")
    state["fc8_x.0.weights"] = state.pop("fc8_x.0.weight")
    with pytest.raises(UserError, match=r"released\.pth: .*missing 1 \(fuse\.0\.weight\).*unexpected 1 "
                                        r"\(fuse\.0\.weights\)"):
        load_state_dict_strict(net, net.import_original_state_dict(state), source="released.pth")


def test_other_model_or_other_file_is_refused():
    state = released_state_dict(device="meta")
    with pytest.raises(UserError, match="'single_stage' network, not 'bsl'"):
        convert_reference_state_dict(state, model="bsl")
    with pytest.raises(UserError, match="not a 1-stage-wseg state dict"):
        convert_reference_state_dict({"conv1a.weight": torch.zeros(1)}, model="ae")


@pytest.mark.slow
def test_released_format_file_loads_strictly_on_cpu(tmp_path):
    path = tmp_path / "model_enc_e020Xs0.928.pth"
    state = released_state_dict()
    torch.save(state, path)
    net = load_network(path, model="single_stage")
    ours = net.state_dict()
    torch.testing.assert_close(ours["head.8.bias"], state["last_conv.8.bias"])
    torch.testing.assert_close(ours["backbone.b4_3.conv_branch2a.weight"], state["b4_3.conv_branch2a.weight"])
    torch.testing.assert_close(ours["gci.fc_skip.1.running_var"], state["shallow_mask.fc_skip.1.running_var"])
    state["fc8_x.0.weights"] = state.pop("fc8_x.0.weight")
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing 1 \(fuse\.0\.weight\)"):
        load_network(path, model="single_stage")


def test_tiny_network_roundtrips_through_the_original_layout(tmp_path):
    torch.manual_seed(0)
    net = build_model("single_stage", backbone="tiny").eval()
    path = tmp_path / "model_enc_e001Xs0.500.pth"
    torch.save(net.export_original_state_dict(), path)
    loaded = load_network(path, model="single_stage", backbone="tiny")
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image)["masks"], net(image)["masks"])


def test_bsl_roundtrip_and_shared_classifier_check(tmp_path):
    with torch.device("meta"):
        big = build_model("bsl", backbone="resnet101", num_classes=5)
    assert reference_model_kwargs(big.export_original_state_dict(), model="bsl") == {"backbone": "resnet101",
                                                                                      "num_classes": 5}
    net = build_model("bsl", backbone="tiny")
    exported = net.export_original_state_dict()
    assert exported["fc8.weight"] is exported["cls_branch.2.weight"]
    path = tmp_path / "bsl.pth"
    torch.save(exported, path)
    load_network(path, model="bsl", backbone="tiny")
    exported = dict(exported, **{"mask_branch.0.weight": exported["fc8.weight"] + 1})
    with pytest.raises(UserError, match="differs"):
        net.import_original_state_dict(exported)


# ----------------------------------------------------------------------------------------------------- modules
def test_stochastic_gate_eval_is_deterministic_mix():
    deep, shallow = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -1.0)
    gate = StochasticGate(0.3).eval()
    torch.testing.assert_close(gate(deep, shallow), torch.full((1, 1, 2, 2), 1.1))


def test_stochastic_gate_training_picks_elementwise_with_the_right_rate():
    torch.manual_seed(0)
    deep, shallow = torch.full((4, 8, 32, 32), 2.0), torch.full((4, 8, 32, 32), -1.0)
    out = StochasticGate(0.3).train()(deep, shallow)
    shifted = (2.0 + 0.3) / 0.7
    is_shallow = torch.isclose(out, torch.tensor(-1.0))
    assert (is_shallow | torch.isclose(out, torch.tensor(shifted))).all()
    assert abs(is_shallow.float().mean().item() - 0.3) < 0.02
    assert abs(out.mean().item() - 2.0) < 0.05  # E[out] = deep
    # element-wise: channels of one pixel differ
    assert is_shallow[0, :, 0, 0].float().std() > 0


def test_stochastic_gate_limits_and_bad_input():
    deep, shallow = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(stochastic_gate(deep, shallow, psi=0.0, training=True), deep)
    torch.testing.assert_close(stochastic_gate(deep, shallow, psi=1.0, training=True), shallow)
    with pytest.raises(ValueError, match="psi"):
        StochasticGate(1.5)
    with pytest.raises(ValueError, match="differ"):
        stochastic_gate(deep, torch.randn(1, 3, 3, 3))


def test_frozen_stats_batch_norm_uses_stored_statistics_in_training():
    bn = FrozenStatsBatchNorm2d(2).train()
    reference = torch.nn.BatchNorm2d(2)
    assert list(bn.state_dict()) == list(reference.state_dict())
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(4, 2, 3, 3) * 5 + 3
    expected = x * torch.tensor([2.0, 3.0]).view(1, 2, 1, 1) / (1 + 1e-5) ** 0.5 + torch.tensor([0.5, -1.0]).view(
        1, 2, 1, 1)
    out = bn(x)
    torch.testing.assert_close(out, expected)
    assert bn.running_mean.abs().sum() == 0 and bn.num_batches_tracked == 0
    out.sum().backward()
    assert bn.weight.grad is not None
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(bn))
    assert isinstance(converted[0], FrozenStatsBatchNorm2d)


def test_aspp_keys_and_shape():
    aspp = ASPP(32)
    keys = set(aspp.state_dict())
    assert {"aspp1.atrous_conv.weight", "aspp4.bn.running_var", "global_avg_pool.1.weight",
            "global_avg_pool.2.weight", "conv1.weight", "bn1.bias"} <= keys
    assert aspp.aspp2.atrous_conv.dilation == (12, 12) and aspp.aspp4.atrous_conv.padding == (36, 36)
    assert aspp.train()(torch.randn(2, 32, 5, 7)).shape == (2, 256, 5, 7)


def test_gci_modulation_hand_value():
    gci = GlobalCueInjection(shallow_channels=1, deep_channels=1, width=1).eval()
    with torch.no_grad():
        gci.fc_deep[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))  # gamma = 1, beta = 2
        gci.fc_skip[0].weight.fill_(1.0)
        gci.fc_cls[0].weight.fill_(1.0)
    shallow = torch.tensor([-3.0, 1.0]).view(1, 1, 1, 2)
    deep = torch.ones(1, 1, 1, 2)
    scale = (1 + 1e-5) ** -0.5  # each eval-mode BN with initial statistics
    gamma, beta = 1.0 * scale, 2.0 * scale
    expected = torch.relu(shallow * scale * (1 + gamma) + beta) * scale
    torch.testing.assert_close(gci(shallow, deep), expected.clamp_min(0))
    assert gci(shallow, deep)[0, 0, 0, 0] == 0


def test_denormalize_inverts_each_backbone_normalization():
    image = torch.randint(0, 256, (5, 4, 3)).float()
    for backbone in ("wideresnet38", "vgg16"):
        norm = normalization_for(backbone)
        x = torch.as_tensor(norm.apply(image.numpy())).unsqueeze(0)
        torch.testing.assert_close(denormalize(x, norm)[0], image.permute(2, 0, 1) / 255, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------- network
def test_single_stage_test_mode_shapes():
    torch.manual_seed(0)
    net = build_model("single_stage", backbone="tiny").eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert set(out) == {"scores", "masks"}
    assert out["scores"].shape == (2, 20) and out["masks"].shape == (2, 21, 64, 64)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 64, 64))


def test_single_stage_forward_backward_with_labels():
    torch.manual_seed(0)
    net = build_model("single_stage", backbone="tiny").train()
    labels = labels_for(2)
    out = net(torch.randn(2, 3, 64, 64), labels=labels)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"scores": (2, 20), "masks": (2, 21, 64, 64), "refined": (2, 21, 64, 64),
                      "logits": (2, 21, 16, 16), "pseudo_gt": (2, 21, 64, 64), "mask_loss": (2,), "fg_mass": (2,)}
    assert (out["logits"][:, 0] == 1.0).all()  # constant background logit
    assert out["masks"][0, 1:][labels[0] == 0].abs().sum() == 0  # absent classes cleaned
    assert not out["refined"].requires_grad and not out["pseudo_gt"].requires_grad
    assert (out["pseudo_gt"].sum(1) <= 1).all()
    loss = torch.nn.functional.multilabel_soft_margin_loss(out["scores"], labels) + out["mask_loss"].sum()
    loss.backward()
    for name in ("backbone.stem.0.weight", "aspp.conv1.weight", "gci.fc_deep.0.weight", "head.8.bias"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all(), name


def test_single_stage_param_groups_follow_the_reference():
    net = build_model("single_stage", backbone="tiny")
    groups = {g["name"]: g for g in net.param_groups(1e-3, 5e-4)}
    assert len(groups["new_weight"]["params"]) == 26 and len(groups["new_bias"]["params"]) == 13
    assert groups["new_bias"]["lr"] == pytest.approx(2e-2) and groups["new_bias"]["weight_decay"] == 0.0


@pytest.mark.parametrize("backbone,groups,trainable,keys", [
    ("wideresnet38", (35, 0, 26, 13), 137_104_500, 309),
    ("vgg16", (13, 13, 26, 13), 30_540_916, 111),
    ("resnet50", (52, 0, 26, 13), 41_143_412, 399),
    ("resnet101", (103, 0, 26, 13), 60_083_316, 705),
])
def test_reference_freezing_groups_and_sizes(backbone, groups, trainable, keys):
    """Group sizes, trainable parameter counts and state-dict sizes verified on the reference (spec 2.1, 2.2, 2.6)."""
    with torch.device("meta"):
        net = build_model("single_stage", backbone=backbone)
    sizes = {g["name"]: len(g["params"]) for g in net.param_groups(1e-3, 5e-4)}
    names = ("pretrained_weight", "pretrained_bias", "new_weight", "new_bias")
    assert tuple(sizes.get(n, 0) for n in names) == groups
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trainable
    assert len(net.state_dict()) == keys


def test_bsl_forward_backward():
    torch.manual_seed(0)
    net = build_model("bsl", backbone="tiny").train()
    out = net(torch.randn(2, 3, 64, 64), labels=labels_for(2))
    assert out["scores"].shape == (2, 20) and out["masks"].shape == (2, 21, 64, 64)
    assert (out["masks"][:, 0] == 0.1).all() and out["masks"].max() <= 1.0 + 1e-6
    out["scores"].sum().backward()
    assert net.classifier.weight.grad is not None
    assert set(net.eval()(torch.randn(1, 3, 32, 32))) == {"scores", "masks"}


def test_bad_labels_and_classes():
    net = build_model("single_stage", backbone="tiny")
    with pytest.raises(ValueError, match=r"labels must be \(B, 20\)"):
        net(torch.randn(1, 3, 32, 32), labels=torch.zeros(1, 21))
    with pytest.raises(ValueError, match="num_classes"):
        build_model("single_stage", backbone="tiny", num_classes=1)
    with pytest.raises(UserError, match="unknown model"):
        build_model("single_stage", backbone="nope")


# -------------------------------------------------------------------------------------------------- train module
def test_train_module_adds_the_mask_loss_only_after_warm_up():
    torch.manual_seed(0)
    net = build_model("single_stage", backbone="tiny").eval()  # eval: deterministic gate and dropout
    module = SingleStageTrainModule(net, warmup_epochs=5)
    batch = {"image": torch.randn(2, 3, 64, 64), "label": labels_for(2)}
    module.set_epoch(4)
    early = module(batch)
    assert set(early) == {"loss", "loss_cls", "loss_mask", "fg_mass"}
    torch.testing.assert_close(early["loss"], early["loss_cls"])
    module.set_epoch(5)
    late = module(batch)
    torch.testing.assert_close(late["loss"], late["loss_cls"] + late["loss_mask"])
    late["loss"].backward()
    assert [g["name"] for g in module.param_groups(0.1, 0.0)][-1] == "new_bias"


def test_train_module_for_bsl_has_no_mask_loss():
    module = SingleStageTrainModule(build_model("bsl", backbone="tiny"))
    module.set_epoch(10)
    out = module({"image": torch.randn(2, 3, 32, 32), "label": labels_for(2)})
    assert "loss_mask" not in out
    torch.testing.assert_close(out["loss"], out["loss_cls"])
