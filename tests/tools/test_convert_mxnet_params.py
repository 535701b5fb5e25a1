"""tools/convert_mxnet_params.py: the NDArray-list reader, the ademxapp -> wideresnet38 names, the command line."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.models.reference_keys import WIDERESNET38_KEYS
from tests.tools.conftest import TOOLS
from tests.tools.formats import GPU, write_ndarray_list
from wsss.errors import UserError

# ademxapp "model A1" (psa_affinitynet.md §1.1): blocks per stage; stages 6 and 7 are bottlenecks.
STAGE_BLOCKS = {2: 3, 3: 3, 4: 6, 5: 3, 6: 1, 7: 1}
BN_LEAVES = (("arg", "gamma", "weight"), ("arg", "beta", "bias"), ("aux", "moving_mean", "running_mean"),
             ("aux", "moving_var", "running_var"))
HEAD = {"arg:linear1000_weight": (1000, 4096), "arg:linear1000_bias": (1000,)}


def ademxapp_names() -> dict:
    """Every array of the checkpoint, written out from the naming scheme: MXNet name -> our expected key."""
    names = {"arg:conv1a_weight": "conv1a.weight"}
    for stage, blocks in STAGE_BLOCKS.items():
        branches = ("2a", "2b1", "2b2") if stage >= 6 else ("2a", "2b1")
        for i in range(blocks):
            theirs, ours = ("a", f"b{stage}") if i == 0 else (f"b{i}", f"b{stage}_{i}")
            for branch in branches + (("1",) if i == 0 else ()):
                names[f"arg:res{stage}{theirs}_branch{branch}_weight"] = f"{ours}.conv_branch{branch}.weight"
            for branch in branches:
                for prefix, leaf, our_leaf in BN_LEAVES:
                    names[f"{prefix}:bn{stage}{theirs}_branch{branch}_{leaf}"] = f"{ours}.bn_branch{branch}.{our_leaf}"
    for prefix, leaf, our_leaf in BN_LEAVES:
        names[f"{prefix}:bn7_{leaf}"] = f"bn7.{our_leaf}"
    return names


def real_shapes() -> dict:
    """MXNet name -> the real shape (conv weights (out, in, kh, kw) as in PyTorch), the 1000-class head included."""
    return {**{n: WIDERESNET38_KEYS[k] for n, k in ademxapp_names().items()}, **HEAD}


def small_arrays(names, seed=0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, 3)).astype(np.float32) for _ in names]


def run(tool, *args):
    return CliRunner().invoke(tool.main, [str(a) for a in args])


def test_map_name_hand_worked(mxnet_tool):
    assert mxnet_tool.map_name("arg:res4b5_branch2b1_weight") == "b4_5.conv_branch2b1.weight"
    assert mxnet_tool.map_name("arg:res5a_branch1_weight") == "b5.conv_branch1.weight"
    assert mxnet_tool.map_name("aux:bn3a_branch2a_moving_var") == "b3.bn_branch2a.running_var"
    assert mxnet_tool.map_name("arg:bn6a_branch2b2_beta") == "b6.bn_branch2b2.bias"
    assert mxnet_tool.map_name("aux:bn7_moving_mean") == "bn7.running_mean"
    assert mxnet_tool.map_name("conv1a_weight") == "conv1a.weight"  # nd.save without prefixes


@pytest.mark.parametrize("name", ["arg:res4b5_branch2b1_gamma", "arg:bn2a_branch2a_weight", "aux:conv1a_weight",
                                  "arg:bn7_moving_var", "arg:linear1000_weight", "arg:res2a_branch3_weight",
                                  "foo:conv1a_weight", "arg:conv1b_weight"])
def test_map_name_refuses_what_the_checkpoint_never_has(mxnet_tool, name):
    assert mxnet_tool.map_name(name) is None


def test_every_ademxapp_array_maps_onto_the_released_pth_keys(mxnet_tool):
    expected = ademxapp_names()
    assert len(expected) + len(HEAD) == 193  # the ademxapp checkpoint's array count (psa_affinitynet.md §1.1)
    mapped, dropped, unmapped = mxnet_tool.map_names(list(HEAD) + list(expected))
    assert mapped == expected and dropped == list(HEAD) and unmapped == []
    released = {k for k in WIDERESNET38_KEYS if not k.endswith("num_batches_tracked")}
    assert set(mapped.values()) == released and len(released) == 191


def test_real_shapes_load_strictly_into_the_backbone(mxnet_tool, conversion):
    shapes = real_shapes()
    mapped, _, _ = mxnet_tool.map_names(list(shapes))
    arrays = {key: np.broadcast_to(np.float32(0), shapes[name]) for name, key in mapped.items()}
    fitted = conversion.fit_to_backbone(arrays, "wideresnet38", "x.params")
    assert sum(a.size for a in fitted.values()) == 105_070_912 + 47_744  # parameters + BN running buffers
    arrays["b7.conv_branch1.weight"] = np.broadcast_to(np.float32(0), (4096, 2048, 3, 3))
    with pytest.raises(UserError, match=r"mis-shaped.*b7\.conv_branch1\.weight"):
        conversion.fit_to_backbone(arrays, "wideresnet38", "x.params")


@pytest.mark.parametrize("version", ["v2", "v1", "v3", "legacy"])
def test_reader_round_trips_names_shapes_dtypes_values(mxnet_tool, tmp_path, version):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((3, 2, 1, 2)).astype(np.float32), rng.standard_normal(5),
              rng.standard_normal((2, 2)).astype(np.float16), np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
              np.array([2**40, -7], dtype=np.int64), np.arange(7, dtype=np.uint8)]
    names = ["arg:a_weight", "aux:b_moving_var", "c", "d", "é", "f"]
    path = tmp_path / "x.params"
    write_ndarray_list(path, names, arrays, version=version, device=(GPU, 1))
    got = mxnet_tool.read_ndarray_list(path)
    assert [n for n, _ in got] == names
    for (_, a), b in zip(got, arrays):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_v3_reads_zero_dimensional_arrays(mxnet_tool, tmp_path):
    path = tmp_path / "x.params"
    write_ndarray_list(path, ["s"], [np.array(2.5, np.float32)], version="v3")
    [(name, value)] = mxnet_tool.read_ndarray_list(path)
    assert name == "s" and value.shape == () and value == 2.5


def test_convert_maps_real_names_and_keeps_values_exactly(mxnet_tool, tmp_path):
    names = list(HEAD) + list(ademxapp_names())
    arrays = small_arrays(names)
    path = tmp_path / "ilsvrc.params"
    write_ndarray_list(path, names, arrays)
    converted, dropped = mxnet_tool.convert(path)
    assert dropped == list(HEAD) and len(converted) == 191
    for name, array in zip(names, arrays):
        if name not in HEAD:
            assert np.array_equal(converted[ademxapp_names()[name]], array)


def test_cli_writes_a_plain_state_dict_and_its_sidecar(mxnet_tool, tmp_path, monkeypatch):
    """The success path with small arrays (the full-size one is the slow test below)."""
    monkeypatch.setattr(mxnet_tool, "fit_to_backbone", lambda arrays, backbone, source: arrays)
    names = list(HEAD) + list(ademxapp_names())
    path, out = tmp_path / "x.params", tmp_path / "w" / "x.pth"
    write_ndarray_list(path, names, small_arrays(names))
    result = run(mxnet_tool, path, out)
    assert result.exit_code == 0, result.output
    assert "191 tensors" in result.stdout and "not the ademxapp release" in result.stderr
    sd = torch.load(out, weights_only=True)
    assert len(sd) == 191 and sd["conv1a.weight"].dtype == torch.float32
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["dropped"] == list(HEAD) and meta["input"]["channel_order"] == "RGB"
    assert meta["release_md5"] == "ff21f45d6bf03284100dcbec571edfad" and meta["is_release"] is False
    again = run(mxnet_tool, path, out)
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert run(mxnet_tool, path, out, "--overwrite").exit_code == 0


def assert_one_line_exit_2(result, out, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert_mxnet_params: error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("stype, label", [(1, "row_sparse"), (2, "csr"), (7, "unknown")])
def test_storage_types_other_than_dense_are_refused(mxnet_tool, tmp_path, stype, label):
    path, out = tmp_path / "x.params", tmp_path / "x.pth"
    write_ndarray_list(path, ["arg:conv1a_weight"], [np.zeros((2, 2), np.float32)], storage_type=stype)
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, f"storage type {stype} ({label})", "array #0")


def test_unknown_versions_wrong_magic_and_truncation_are_refused(mxnet_tool, tmp_path):
    path, out = tmp_path / "x.params", tmp_path / "x.pth"
    write_ndarray_list(path, ["arg:conv1a_weight"], [np.ones((4, 3), np.float32)])
    good = path.read_bytes()
    path.write_bytes(good[:24] + (0xF993FACB).to_bytes(4, "little") + good[28:])
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, "unknown NDArray version", "0xf993facb")
    path.write_bytes((0x113).to_bytes(8, "little") + good[8:])
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, "not an MXNet NDArray list", "0x113")
    for cut in (10, 40, len(good) - 30, len(good) - 3):
        path.write_bytes(good[:cut])
        assert_one_line_exit_2(run(mxnet_tool, path, out), out, "truncated file")
    path.write_bytes(good + b"\0")
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, "1 unexpected bytes after the names")


def test_every_unmapped_array_is_reported(mxnet_tool, tmp_path):
    names = list(HEAD) + list(ademxapp_names()) + ["arg:fc8_weight", "aux:bn7_gamma"]
    path, out = tmp_path / "x.params", tmp_path / "x.pth"
    write_ndarray_list(path, names, small_arrays(names))
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, "2 (arg:fc8_weight, aux:bn7_gamma)",
                           "map onto no wideresnet38 key")


def test_wrong_shapes_are_refused_before_writing(mxnet_tool, tmp_path):
    names = list(HEAD) + list(ademxapp_names())
    path, out = tmp_path / "x.params", tmp_path / "x.pth"
    write_ndarray_list(path, names, small_arrays(names))
    assert_one_line_exit_2(run(mxnet_tool, path, out), out, "mis-shaped", "conv1a.weight (2, 3) vs (64, 3, 3, 3)")


def test_command_line_script_refuses_a_truncated_file(tmp_path):
    path, out = tmp_path / "x.params", tmp_path / "x.pth"
    path.write_bytes(b"\x12\x01" + b"\0" * 20)
    proc = subprocess.run([sys.executable, str(TOOLS / "convert_mxnet_params.py"), str(path), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"convert_mxnet_params: error: {path}: truncated file: list header needs 16 bytes at offset 8, 14 left"]


@pytest.mark.slow
def test_full_size_file_converts_and_loads_with_init_weights(tmp_path):
    """~400 MB: every array at its real shape, random values, then ``--init-weights``'s loader, strictly."""
    from wsss.models import build_backbone
    from wsss.models.weights import load_backbone_init

    shapes = real_shapes()
    names = list(shapes)

    def values(i, shape):
        return np.random.default_rng(i).standard_normal(shape, dtype=np.float32)

    path, out = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params", tmp_path / "ilsvrc.pth"
    write_ndarray_list(path, names, (values(i, shapes[n]) for i, n in enumerate(names)))
    proc = subprocess.run([sys.executable, str(TOOLS / "convert_mxnet_params.py"), str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    path.unlink()
    backbone = build_backbone("wideresnet38")
    load_backbone_init(backbone, out)
    state = backbone.state_dict()
    keys = ademxapp_names()
    for i, name in enumerate(names):
        if name in keys:
            assert np.array_equal(state[keys[name]].numpy(), values(i, shapes[name])), name
