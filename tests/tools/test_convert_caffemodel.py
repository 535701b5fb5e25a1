"""tools/convert_caffemodel.py: the protobuf wire reader, the vgg16 layout, the command line."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.models.reference_keys import VGG16_KEYS
from tests.tools.conftest import TOOLS
from tests.tools.formats import blob_proto, layer_proto, length_field, net_proto, tag, varint
from wsss.errors import UserError

VGG_LAYERS = list(dict.fromkeys(key.split(".")[0] for key in VGG16_KEYS))  # conv1_1 ... conv5_3, fc6, fc7


def vgg_net(shapes: dict, v1: bool = False, extra: tuple = (), seed: int = 0, legacy_bias: bool = True):
    """A DeepLab-style net: data layer, each VGG layer (weight + bias blobs) followed by a blob-less ReLU."""
    rng = np.random.default_rng(seed)
    values, layers = {}, [layer_proto("data", [], v1=v1, type_="Data")]
    for name in VGG_LAYERS:
        weight = rng.standard_normal(shapes[f"{name}.weight"]).astype(np.float32)
        bias = rng.standard_normal(shapes[f"{name}.bias"]).astype(np.float32)
        values[f"{name}.weight"], values[f"{name}.bias"] = weight, bias
        blobs = [blob_proto(weight, legacy=v1), blob_proto(bias, legacy=v1 and legacy_bias)]
        layers += [layer_proto(name, blobs, v1=v1), layer_proto(f"relu{name[4:]}", [], v1=v1, type_="ReLU")]
    return net_proto(layers + list(extra), v1=v1), values


def small_shapes() -> dict:
    return {key: (2, 3, 1, 1) if key.endswith("weight") else (2,) for key in VGG16_KEYS}


def run(tool, *args):
    return CliRunner().invoke(tool.main, [str(a) for a in args])


def assert_one_line_exit_2(result, out, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_caffemodel: error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_varint_hand_worked(caffe_tool):
    assert caffe_tool.read_varint(memoryview(b"\xac\x02"), 0) == (300, 2)
    assert caffe_tool.signed(caffe_tool.read_varint(memoryview(varint(-2)), 0)[0]) == -2
    with pytest.raises(ValueError, match="truncated varint"):
        caffe_tool.read_varint(memoryview(b"\xac"), 0)


@pytest.mark.parametrize("packed, double, legacy", [(True, False, False), (False, False, True),
                                                     (True, True, False), (False, True, True)])
def test_blob_round_trip(caffe_tool, packed, double, legacy):
    a = np.random.default_rng(0).standard_normal((3, 2, 2, 1)).astype(np.float32)
    got = caffe_tool.read_blob(memoryview(blob_proto(a, legacy=legacy, packed=packed, double=double)))
    assert got.dtype == np.float32 and got.shape == a.shape and np.array_equal(got, a)


@pytest.mark.parametrize("v1", [False, True])
def test_reader_round_trips_layers(caffe_tool, tmp_path, v1):
    data, values = vgg_net(small_shapes(), v1=v1)
    path = tmp_path / "x.caffemodel"
    path.write_bytes(data)
    layers = caffe_tool.read_caffemodel(path)
    assert [layer.name for layer in layers][:4] == ["data", "conv1_1", "relu1_1", "conv1_2"]
    assert layers[1].type == ("V1:4" if v1 else "Convolution") and layers[2].blobs == []
    conv = layers[1]
    assert np.array_equal(conv.blobs[0], values["conv1_1.weight"])
    assert conv.blobs[1].shape == ((1, 1, 1, 2) if v1 else (2,))
    assert np.array_equal(conv.blobs[1].ravel(), values["conv1_1.bias"])


@pytest.mark.parametrize("v1", [False, True])
def test_real_vgg16_20m_shapes_load_strictly_into_the_backbone(caffe_tool, conversion, v1):
    layers = [caffe_tool.CaffeLayer(name, "Convolution", [
        np.broadcast_to(np.float32(0), VGG16_KEYS[f"{name}.weight"]),
        np.broadcast_to(np.float32(0), (1, 1, 1) * v1 + VGG16_KEYS[f"{name}.bias"])]) for name in VGG_LAYERS]
    arrays, unmapped = caffe_tool.collect(layers, caffe_tool.LAYOUTS["vgg16"])
    assert unmapped == [] and len(arrays) == 30
    fitted = conversion.fit_to_backbone(arrays, "vgg16", "x.caffemodel")
    assert fitted["fc6.bias"].shape == (1024,) and fitted["fc6.weight"].shape == (1024, 512, 3, 3)
    assert sum(a.size for a in fitted.values()) == 20_483_904


def test_convert_keeps_values_exactly(caffe_tool, tmp_path):
    data, values = vgg_net(small_shapes())
    path = tmp_path / "x.caffemodel"
    path.write_bytes(data)
    arrays = caffe_tool.convert(path, caffe_tool.LAYOUTS["vgg16"])
    assert arrays.keys() == values.keys()
    assert all(np.array_equal(arrays[k], v) for k, v in values.items())


def test_cli_writes_a_plain_state_dict_and_its_sidecar(caffe_tool, tmp_path, monkeypatch):
    """The success path with small blobs (the full-size one is the slow test below)."""
    monkeypatch.setattr(caffe_tool, "fit_to_backbone", lambda arrays, backbone, source: arrays)
    data, values = vgg_net(small_shapes(), v1=True)
    path, out = tmp_path / "vgg16_20M.caffemodel", tmp_path / "vgg16_20M.pth"
    path.write_bytes(data)
    result = run(caffe_tool, path, out)
    assert result.exit_code == 0, result.output
    sd = torch.load(out, weights_only=True)
    assert sd.keys() == values.keys() and torch.equal(sd["fc7.weight"], torch.from_numpy(values["fc7.weight"]))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["input"]["channel_order"] == "BGR" and meta["input"]["mean"] == [104.008, 116.669, 122.675]
    assert meta["input"]["pixel_scale"] == 1.0 and meta["release_md5"] is None and meta["is_release"] is None
    assert run(caffe_tool, path, out).exit_code == 2


def test_unmapped_layers_with_blobs_are_reported(caffe_tool, tmp_path):
    fc8 = layer_proto("fc8", [blob_proto(np.ones((3, 2))), blob_proto(np.ones(3))])
    odd = layer_proto("fc9", [blob_proto(np.ones(1))])
    data, _ = vgg_net(small_shapes(), extra=(fc8, odd))
    path, out = tmp_path / "x.caffemodel", tmp_path / "x.pth"
    path.write_bytes(data)
    assert_one_line_exit_2(run(caffe_tool, path, out), out, "2 (fc8 (2 blobs), fc9 (1 blobs))",
                           "map onto no vgg16 key")


def test_wrong_shapes_are_refused(caffe_tool, tmp_path):
    data, _ = vgg_net(small_shapes())
    path, out = tmp_path / "x.caffemodel", tmp_path / "x.pth"
    path.write_bytes(data)
    assert_one_line_exit_2(run(caffe_tool, path, out), out, "mis-shaped", "conv1_1.weight (2, 3, 1, 1)")


def test_malformed_files_are_refused_with_one_line(caffe_tool, tmp_path):
    good, _ = vgg_net(small_shapes())
    path, out = tmp_path / "x.caffemodel", tmp_path / "x.pth"
    cases = {
        good[:len(good) // 2]: "truncated file?",
        good[:-1]: "truncated",
        b"": "no layers",
        tag(3, 3) + good: "wire type 3",
        length_field(100, length_field(7, blob_proto(np.ones(2))[:-4])): "BlobProto: field 5 needs 8 bytes",
        length_field(100, length_field(7, tag(1, 0) + varint(5) + length_field(5, b"\0" * 8))): "2 values for shape",
        length_field(2, length_field(1, b"")): "V0 layer format",
    }
    for data, fragment in cases.items():
        path.write_bytes(data)
        assert_one_line_exit_2(run(caffe_tool, path, out), out, fragment)


def test_command_line_script_refuses_a_truncated_file(tmp_path):
    path, out = tmp_path / "x.caffemodel", tmp_path / "x.pth"
    path.write_bytes(b"\x0a\x05ab")
    proc = subprocess.run([sys.executable, str(TOOLS / "convert_caffemodel.py"), str(path), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"convert_caffemodel: error: {path}: not a readable Caffe model: NetParameter: field 1 needs 5 bytes "
        f"at byte 2, 2 left (truncated file?)"]
    assert not out.exists()


def test_missing_file_is_a_user_error(caffe_tool, tmp_path):
    with pytest.raises(UserError, match="file not found"):
        caffe_tool.convert(tmp_path / "missing.caffemodel", caffe_tool.LAYOUTS["vgg16"])


@pytest.mark.slow
def test_full_size_vgg16_20m_converts_and_loads_with_init_weights(tmp_path):
    """~80 MB: every blob at its real shape (legacy 4-D biases), then ``--init-weights``'s loader, strictly."""
    from wsss.models import build_backbone
    from wsss.models.weights import load_backbone_init

    data, values = vgg_net(VGG16_KEYS, v1=True)
    path, out = tmp_path / "vgg16_20M.caffemodel", tmp_path / "vgg16_20M.pth"
    path.write_bytes(data)
    del data
    proc = subprocess.run([sys.executable, str(TOOLS / "convert_caffemodel.py"), str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    backbone = build_backbone("vgg16")
    load_backbone_init(backbone, out)
    state = backbone.state_dict()
    assert all(np.array_equal(state[k].numpy(), v) for k, v in values.items())
