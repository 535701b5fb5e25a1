"""Strict loading: original-format files, our checkpoints, ImageNet inits, and every way a file can be wrong."""
import logging

import pytest
import torch
import torchvision

from tests.models.reference_keys import RESNET38_CLS_HEAD, VGG16_AFF_HEAD, VGG16_KEYS, WIDERESNET38_KEYS
from wsss.errors import UserError
from wsss.models import build_model
from wsss.models.network import backbone_from_keys
from wsss.models.weights import load_backbone_init, load_network, load_state_dict_strict


def random_state_dict(keys: dict, seed: int = 0) -> dict:
    """Random tensors under the original key names, as a converted file has them (no num_batches_tracked)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in keys.items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") else 0.0)
    return sd


def save_checkpoint(path, net, model, model_kwargs):
    torch.save({"model": model, "model_kwargs": model_kwargs, "state_dict": net.state_dict(), "config": {},
                "epoch": 1, "optimizer": None}, path)


def assert_same_outputs(a, b, x):
    with torch.no_grad():
        out_a, out_b = a.eval()(x), b.eval()(x)
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        assert torch.equal(out_a[key], out_b[key]), key


@pytest.fixture(scope="module")
def res38_cls_file(tmp_path_factory):
    """A file in the format of PSA's res38_cls.pth: random values, original key names."""
    path = tmp_path_factory.mktemp("weights") / "res38_cls.pth"
    torch.save(random_state_dict({**WIDERESNET38_KEYS, **RESNET38_CLS_HEAD}), path)
    return path


def test_original_resnet38_cls_loads_strictly_and_round_trips(res38_cls_file, tmp_path):
    original = torch.load(res38_cls_file, weights_only=True)
    net = load_network(res38_cls_file, model="cam")
    assert not net.training
    loaded = net.state_dict()
    assert all(torch.equal(loaded["fc8.weight" if k == "fc8.weight" else "backbone." + k], v)
               for k, v in original.items())
    ckpt = tmp_path / "ours.pt"
    save_checkpoint(ckpt, net, "cam", {"backbone": "wideresnet38", "num_classes": 20})
    again = load_network(ckpt, model="cam")
    assert_same_outputs(net, again, torch.randn(1, 3, 24, 40))


def test_original_file_with_one_key_renamed_or_reshaped_fails(res38_cls_file, tmp_path):
    net = build_model("cam", backbone="wideresnet38")
    original = net.import_original_state_dict(torch.load(res38_cls_file, weights_only=True))
    renamed = dict(original)
    renamed["backbone.b4_3.conv_branch2a.wieght"] = renamed.pop("backbone.b4_3.conv_branch2a.weight")
    with pytest.raises(UserError, match=r"missing 1 \(backbone\.b4_3\.conv_branch2a\.weight\); "
                                        r"unexpected 1 \(backbone\.b4_3\.conv_branch2a\.wieght\)"):
        load_state_dict_strict(net, renamed, source="res38_cls.pth")
    reshaped = dict(original)
    reshaped["fc8.weight"] = torch.zeros(21, 4096, 1, 1)
    with pytest.raises(UserError, match=r"res38_cls.pth: .*mis-shaped .* 1 \(fc8\.weight \(21, 4096, 1, 1\) vs "
                                        r"\(20, 4096, 1, 1\)\)"):
        load_state_dict_strict(net, reshaped, source="res38_cls.pth")


@pytest.mark.parametrize("name,head", [("aff", VGG16_AFF_HEAD)])
def test_original_vgg16_aff_file_round_trip(name, head, tmp_path):
    path = tmp_path / "vgg16_aff.pth"
    torch.save(random_state_dict({**VGG16_KEYS, **head}), path)
    net = load_network(path, model=name)  # the backbone is read from the key names
    assert net.backbone_name == "vgg16" and net.backbone.fc6.dilation == (4, 4)
    assert torch.equal(net.gn8_4.bias, torch.load(path, weights_only=True)["gn8_4.bias"])
    with pytest.raises(UserError, match="holds a aff network with backbone='vgg16', expected 'wideresnet38'"):
        load_network(path, model=name, backbone="wideresnet38")
    ckpt = tmp_path / "ours.pt"
    save_checkpoint(ckpt, net, name, {"backbone": "vgg16"})
    assert_same_outputs(net, load_network(ckpt), torch.randn(1, 3, 32, 32))


def test_original_file_implies_backbone_and_class_count(tmp_path):
    net = build_model("cam", backbone="tiny", num_classes=4)
    path = tmp_path / "flat.pth"
    torch.save(net.export_original_state_dict(), path)
    again = load_network(path, model="cam")
    assert again.backbone_name == "tiny" and again.num_classes == 4
    assert_same_outputs(net, again, torch.randn(1, 3, 16, 16))
    with pytest.raises(UserError, match="num_classes=4, expected 20"):
        load_network(path, model="cam", num_classes=20)


@pytest.mark.parametrize("backbone", ["wideresnet38", "vgg16", "resnet50", "resnet101", "tiny"])
def test_backbone_from_keys(backbone):
    with torch.device("meta"):
        keys = [k.removeprefix("backbone.") for k in build_model("aff", backbone=backbone).state_dict()]
    assert backbone_from_keys(keys) == backbone
    assert backbone_from_keys({"fc8.weight": None}) is None


def test_one_clear_error_for_many_problems(tmp_path):
    net = build_model("cam", backbone="tiny", num_classes=3)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("backbone.stage6")}
    with pytest.raises(UserError) as err:
        load_state_dict_strict(net, sd, source="x.pth")
    message = str(err.value)
    assert "\n" not in message and "missing 10 (backbone.stage6.0.weight, " in message and ", ...)" in message


def test_checkpoint_checks(tmp_path):
    net = build_model("cam", backbone="tiny", num_classes=3)
    path = tmp_path / "cam.pt"
    save_checkpoint(path, net, "cam", {"backbone": "tiny", "num_classes": 3})
    with pytest.raises(UserError, match="checkpoint for model cam, expected aff"):
        load_network(path, model="aff")
    with pytest.raises(UserError, match="checkpoint has backbone='tiny', expected 'vgg16'"):
        load_network(path, model="cam", backbone="vgg16")
    with pytest.raises(UserError, match="checkpoint has num_classes=3, expected 20"):
        load_network(path, num_classes=20)
    again = load_network(path, model="cam", backbone="tiny", num_classes=None)  # None = not given
    assert_same_outputs(net, again, torch.randn(1, 3, 16, 16))


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        load_network(tmp_path / "nope.pth", model="cam")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="garbage.pth: not a readable PyTorch weights file"):
        load_network(garbage, model="cam")
    pickled = tmp_path / "pickled.pth"
    torch.save({"a": torch.nn.Conv2d(1, 1, 1)}, pickled)  # a pickled module: refused by weights_only
    with pytest.raises(UserError, match="pickled.pth: not a readable PyTorch weights file"):
        load_network(pickled, model="cam")
    flat = tmp_path / "flat.pth"
    torch.save(build_model("cam", backbone="tiny").export_original_state_dict(), flat)
    with pytest.raises(UserError, match="plain state_dict .* say which network"):
        load_network(flat)
    params = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    params.write_bytes(b"\x12\x01")
    with pytest.raises(UserError, match=r"\.params files need converting"):
        load_backbone_init(build_model("tiny"), params)
    other = tmp_path / "other.pth"
    torch.save({"weights": [1, 2]}, other)
    with pytest.raises(UserError, match="not a weights file we know"):
        load_network(other, model="cam")


def test_resnet50_imagenet_init_drops_fc_explicitly(tmp_path, caplog):
    reference = torchvision.models.resnet50()
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_model("resnet50")
    with caplog.at_level(logging.INFO, logger="wsss"):
        caplog.handler.setLevel(logging.INFO)
        logging.getLogger("wsss").addHandler(caplog.handler)
        try:
            load_backbone_init(backbone, path)
        finally:
            logging.getLogger("wsss").removeHandler(caplog.handler)
    assert "dropped 2 (fc.weight, fc.bias)" in caplog.text
    assert torch.equal(backbone.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    broken = {k: v for k, v in reference.state_dict().items() if k != "layer1.0.bn1.running_var"}
    torch.save(broken, path)
    with pytest.raises(UserError, match=r"missing 1 \(layer1\.0\.bn1\.running_var\)"):
        load_backbone_init(build_model("resnet50"), path)


def test_vgg16_imagenet_init_and_module_prefix(tmp_path):
    sd = random_state_dict(VGG16_KEYS)
    path = tmp_path / "vgg16_20M.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    backbone = build_model("vgg16")
    load_backbone_init(backbone, path)
    assert torch.equal(backbone.fc7.bias, sd["fc7.bias"])
    torch.save({**sd, "fc8.weight": torch.zeros(1000, 1024, 1, 1)}, path)
    with pytest.raises(UserError, match=r"unexpected 1 \(fc8\.weight\)"):
        load_backbone_init(build_model("vgg16"), path)
    with pytest.raises(UserError, match="only the ResNets have torchvision weights"):
        load_backbone_init(build_model("vgg16"), "torchvision")


def test_missing_num_batches_tracked_is_tolerated():
    net = build_model("tiny")
    sd = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_dict_strict(net, sd)
    with pytest.raises(UserError, match="expected a state_dict"):
        load_state_dict_strict(net, {"stem.0.weight": [1.0]})


def test_backbone_init_from_our_classifier_checkpoint(tmp_path):
    from wsss.engine.checkpoint import save_checkpoint
    from wsss.models.registry import build_model
    from wsss.models.weights import load_backbone_init

    cam = build_model("cam", backbone="tiny", num_classes=20)
    save_checkpoint(tmp_path / "cam.pt", model_name="cam", model_kwargs={"backbone": "tiny", "num_classes": 20},
                    state_dict=cam.state_dict(), config={}, epoch=0, iteration=1)
    single = build_model("single_stage", backbone="tiny")
    load_backbone_init(single.backbone, tmp_path / "cam.pt")
    mine, theirs = single.backbone.state_dict(), cam.backbone.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    vgg = build_model("vgg16")
    with pytest.raises(UserError, match="on backbone 'tiny', expected one on backbone 'vgg16'"):
        load_backbone_init(vgg, tmp_path / "cam.pt")


def test_a_module_check_on_load_becomes_a_user_error_naming_the_file():
    """PAMR refuses kernels other than its fixed ones with a ValueError (an op); the loader names the file."""
    from wsss.models.registry import build_model
    from wsss.models.weights import load_state_dict_strict

    net = build_model("single_stage", backbone="tiny", num_classes=4)
    state = net.state_dict()
    key = next(k for k in state if k.endswith("neighbour_kernel"))
    state[key] = torch.ones_like(state[key])
    with pytest.raises(UserError, match="weights.pth: PAMR buffer 'neighbour_kernel'"):
        load_state_dict_strict(net, state, source="weights.pth")
