"""SEAM's network, loss module, released-weights format and multi-scale inference."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.models.reference_keys import WIDERESNET38_KEYS, parse
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.normalization import normalization_for
from wsss.models.seam import seam_image_cams
from wsss.models.seam_train import SeamTrainModule, second_view
from wsss.models.weights import load_network, load_state_dict_strict
from wsss.ops.seam import seam_normalize_cams

# resnet38_SEAM.py:16-20 as the seam_wsfcn.md A5b lists them; with the 228 resnet38d keys: 232.
SEAM_HEAD = parse("""
fc8.weight (21, 4096, 1, 1)
f8_3.weight (64, 512, 1, 1)
f8_4.weight (128, 1024, 1, 1)
f9.weight (192, 195, 1, 1)
""")
PCM_MODULES = ("f8_3", "f8_4", "f9")


def _batch(b=2, size=64):
    label = torch.zeros(b, 20)
    label[0, [0, 4]] = 1
    label[-1, 7] = 1
    return {"image": torch.randn(b, 3, size, size), "label": label}


@pytest.fixture(scope="module")
def tiny_seam():
    torch.manual_seed(0)
    return build_model("seam", backbone="tiny")


def test_forward_shapes_and_logits(tiny_seam):
    net = tiny_seam.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 40, 48))
    assert set(out) == {"cams", "cams_pcm", "logits"}
    assert out["cams"].shape == out["cams_pcm"].shape == (2, 21, 40, 48) and out["logits"].shape == (2, 20)
    torch.testing.assert_close(out["logits"], out["cams"][:, 1:].mean(dim=(2, 3)))
    assert all(torch.isfinite(v).all() for v in out.values())
    assert net.stride == 8 and net.f8_3.in_channels == 64 and net.f8_4.in_channels == 96  # tiny's conv4 / conv5


def test_head_layers_and_initialisation():
    torch.manual_seed(0)
    net = build_model("seam", backbone="tiny", num_classes=5)
    assert net.fc8.weight.shape == (6, 128, 1, 1) and all(getattr(net, n).bias is None for n in ("fc8",) + PCM_MODULES)
    assert net.f9.in_channels == 195 and net.f9.out_channels == 192
    assert net.fc8.weight.abs().max() <= math.sqrt(6 / (128 + 6))  # xavier uniform
    bound = 4 * math.sqrt(6 / (195 + 192))  # xavier uniform, gain 4
    assert 0.9 * bound < net.f9.weight.abs().max() <= bound
    assert float(net.f8_4.weight.detach().std()) == pytest.approx(math.sqrt(2 / 96), rel=0.15)  # kaiming normal
    with pytest.raises(ValueError, match="num_classes"):
        build_model("seam", backbone="tiny", num_classes=0)
    with torch.device("meta"), pytest.raises(UserError, match="conv4/conv5/out taps at different strides"):
        build_model("seam", backbone="resnet50", backbone_kwargs={"output_stride": 16})


def test_full_size_shapes_on_the_meta_device():
    """SEAM at its crop (448 -> 56 at stride 8, second view 134 -> 17), PCM features 195 -> 192: shapes only."""
    seen = []
    with torch.device("meta"):
        net = build_model("seam").train()
        net.f9.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
        out = SeamTrainModule(net)({"image": torch.empty(2, 3, 448, 448), "label": torch.zeros(2, 20)})
    assert seen == [((2, 195, 56, 56), (2, 192, 56, 56)), ((2, 195, 17, 17), (2, 192, 17, 17))]
    assert all(v.shape == () for v in out.values())


def test_second_view_size():
    assert second_view(torch.zeros(1, 3, 448, 448)).shape[-2:] == (134, 134)
    assert second_view(torch.zeros(1, 3, 64, 80)).shape[-2:] == (19, 24)


def test_train_module_forward_backward_and_visuals(tiny_seam):
    torch.manual_seed(0)
    module = SeamTrainModule(tiny_seam).train()
    out = module(_batch())
    assert set(out) == {"loss", "loss_cls", "loss_rvmin", "loss_er", "loss_ecr"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    total = out["loss_cls"] + out["loss_rvmin"] + out["loss_er"] + out["loss_ecr"]
    torch.testing.assert_close(out["loss"], total)
    tiny_seam.zero_grad()
    out["loss"].backward()
    assert all(p.grad is not None for p in tiny_seam.parameters() if p.requires_grad)
    visuals = module.visuals(_batch(b=1))
    assert set(visuals) == {"cam", "pcm"} and module.network.training
    assert all(v.shape == (3, 64, 64) and v.min() >= 0 and v.max() <= 1 for v in visuals.values())
    torch.manual_seed(0)  # same dropout masks: the same terms, without rvmin in the loss
    without = SeamTrainModule(tiny_seam, rvmin_weight=0)(_batch())
    torch.testing.assert_close(without["loss"], total - out["loss_rvmin"])
    with pytest.raises(ValueError, match="rvmin_weight"):
        SeamTrainModule(tiny_seam, rvmin_weight=-1)


def _grads(loss, net):
    """Parameter name -> |gradient| sum (0 for parameters the loss does not reach)."""
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
    return {n: 0.0 if g is None else float(g.abs().sum()) for n, g in zip(params, grads)}


@pytest.mark.parametrize("backbone", ["tiny", pytest.param("wideresnet38", marks=pytest.mark.slow)])
def test_gradient_routing(backbone):
    """A5b: classification and ER reach fc8 and the backbone only; ECR and rvmin only f8_3, f8_4, f9;
    fc8's background row never gets a gradient."""
    torch.manual_seed(1)
    net = build_model("seam", backbone=backbone).train()
    out = SeamTrainModule(net)(_batch(size=64 if backbone == "tiny" else 32))
    pcm = lambda n: n.split(".")[0] in PCM_MODULES  # noqa: E731
    for term in ("loss_cls", "loss_er"):
        grads = _grads(out[term], net)
        assert all(g == 0 for n, g in grads.items() if pcm(n)), term
        assert grads["fc8.weight"] > 0 and sum(g for n, g in grads.items() if n.startswith("backbone.")) > 0, term
    for term in ("loss_ecr", "loss_rvmin"):
        grads = _grads(out[term], net)
        assert all(g == 0 for n, g in grads.items() if not pcm(n)), term
        assert all(grads[f"{m}.weight"] > 0 for m in PCM_MODULES), term
    fc8 = torch.autograd.grad(out["loss"], net.fc8.weight)[0]
    assert fc8[0].abs().sum() == 0 and fc8[1:].abs().sum() > 0


def test_param_groups_put_the_heads_at_10x():
    with torch.device("meta"):
        net = build_model("seam")
    groups = {g["name"]: g for g in net.param_groups(0.01, 5e-4)}
    assert set(groups) == {"pretrained_weight", "new_weight"}  # no biases anywhere; BN frozen
    new = groups["new_weight"]
    assert new["lr_mult"] == 10 and {id(p) for p in new["params"]} == {
        id(getattr(net, m).weight) for m in ("fc8",) + PCM_MODULES}
    assert len(groups["pretrained_weight"]["params"]) == 35  # 43 backbone convs less the 8 of conv1a, b2, b2_1, b2_2


def test_released_key_format_on_the_meta_device():
    """The full-size network against the released file's 232 keys (A5b), without allocating 420 MB."""
    with torch.device("meta"):
        net = build_model("seam")
        released = {k: torch.empty(s) for k, s in {**WIDERESNET38_KEYS, **SEAM_HEAD}.items()}
    assert len(released) == 232 and sum(k.endswith("num_batches_tracked") for k in released) == 37
    assert sum(v.numel() for k, v in released.items() if "num_batches" not in k) == 105_405_952
    assert net.original_model_kwargs(released) == {"backbone": "wideresnet38", "num_classes": 20}
    mapped = net.import_original_state_dict(released)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in mapped.items()}
    load_state_dict_strict(net, mapped)
    renamed = {("f9.w" if k == "f9.weight" else k): v for k, v in released.items()}
    with pytest.raises(UserError, match=r"missing 1 \(f9.weight\); unexpected 1 \(f9.w\)"):
        load_state_dict_strict(net, net.import_original_state_dict(renamed))
    missing = {k: v for k, v in released.items() if k != "b4_3.conv_branch2a.weight"}
    with pytest.raises(UserError, match=r"missing 1 \(backbone.b4_3.conv_branch2a.weight\)"):
        load_state_dict_strict(net, net.import_original_state_dict(missing))


def test_tiny_export_import_round_trip(tiny_seam, tmp_path):
    exported = tiny_seam.export_original_state_dict()
    assert {"fc8.weight", "f9.weight", "stem.0.weight"} <= set(exported)
    torch.save(exported, tmp_path / "seam.pth")
    loaded = load_network(tmp_path / "seam.pth", model="seam", num_classes=20)
    assert loaded.backbone_name == "tiny" and not loaded.training
    for k, v in tiny_seam.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    bad = dict(exported)
    bad["f8_3.kernel"] = bad.pop("f8_3.weight")
    torch.save(bad, tmp_path / "renamed.pth")
    with pytest.raises(UserError, match=r"missing 1 \(f8_3.weight\); unexpected 1 \(f8_3.kernel\)"):
        load_network(tmp_path / "renamed.pth", model="seam")
    del bad["f8_3.kernel"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(UserError, match=r"missing 1 \(f8_3.weight\)"):
        load_network(tmp_path / "missing.pth", model="seam")


def test_a_psa_classifier_file_is_refused_naming_the_keys(tmp_path):
    torch.save(build_model("cam", backbone="tiny").export_original_state_dict(), tmp_path / "cls.pth")
    for kwargs in ({}, {"num_classes": 20}):
        with pytest.raises(UserError, match=r"missing 3 \(f8_3.weight, f8_4.weight, f9.weight\).*"
                                            r"mis-shaped.*fc8.weight \(20, 128, 1, 1\) vs \(21, 128, 1, 1\)"):
            load_network(tmp_path / "cls.pth", model="seam", **kwargs)


def _plain_inference(net, image, labels, scales):
    """infer_SEAM.py step by step for one image: PCM output, un-flip, sum, the NumPy normalisation, clip."""
    h, w = image.shape[:2]
    total = torch.zeros(20, h, w)
    norm = normalization_for("tiny")
    for s in scales:
        size = (round(w * s), round(h * s))
        scaled = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
        for flip in (False, True):
            x = torch.as_tensor(norm.apply(scaled))[None]
            x = x.flip(-1) if flip else x
            cam = net(x)["cams_pcm"][:, 1:]
            cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=False)[0]
            mask = torch.zeros(20, 1, 1)
            mask[labels] = 1
            total += (cam * mask).flip(-1) if flip else cam * mask
    return np.clip(seam_normalize_cams(total, clip=False).numpy()[labels], 0, 1)


def test_multiscale_inference(tiny_seam):
    torch.manual_seed(0)
    net = tiny_seam.eval()
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    labels = np.array([6, 2])
    with torch.no_grad():
        cams = seam_image_cams(net, image, labels, 20, normalization_for("tiny"), scales=(0.5, 1.0))
        expected = _plain_inference(net, image, labels, (0.5, 1.0))
    assert cams.shape == (2, 37, 45) and cams.dtype == np.float32
    assert cams.min() == 0 and 0.9 < cams.max() < 1
    np.testing.assert_allclose(cams, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        seam_image_cams(net, image, [20], 20, normalization_for("tiny"))


@pytest.mark.slow
def test_full_size_released_file_loads_strictly(tmp_path):
    """A file in exactly the released format (232 keys, random values) through load_network (420 MB)."""
    torch.manual_seed(0)
    released = {k: torch.randn(s) if s else torch.tensor(0) for k, s in {**WIDERESNET38_KEYS, **SEAM_HEAD}.items()}
    torch.save(released, tmp_path / "resnet38_SEAM.pth")
    net = load_network(tmp_path / "resnet38_SEAM.pth", model="seam")
    assert torch.equal(net.f9.weight, released["f9.weight"])
    assert torch.equal(net.backbone.b7.conv_branch2b2.weight, released["b7.conv_branch2b2.weight"])
    exported = net.export_original_state_dict()
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in released.items()}
