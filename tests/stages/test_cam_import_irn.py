"""``wsss cam import --format irn``: IRN's make_cam dicts (irn.md §2.4; torch tensors inside a pickled dict) read
without general unpickling, as a ``cam`` artifact with the stride-4 CAM."""
from __future__ import annotations

import os

import numpy as np
import torch
from click.testing import CliRunner

from tests.cli.checks import assert_user_error
from wsss.artifacts import read_manifest
from wsss.artifacts.items import FORMATS
from wsss.cli.main import cli
from wsss.data.prepared import open_dataset


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _irn_npy(folder, data, ids) -> dict:
    """IRN's make_cam files: np.save of {"keys": int64 tensor, "cam": float32 tensor, "high_res": float32 array}."""
    folder.mkdir()
    written = {}
    for n, image_id in enumerate(ids):
        h, w = data.read_image(image_id).shape[:2]
        keys = torch.as_tensor(data.labels(image_id), dtype=torch.int64)
        g = torch.Generator().manual_seed(n)
        entry = {"keys": keys, "cam": torch.rand(len(keys), -(-h // 4), -(-w // 4), generator=g),
                 "high_res": torch.rand(len(keys), h, w, generator=g).numpy()}
        np.save(folder / f"{image_id}.npy", entry)
        written[image_id] = entry
    return written


def test_cam_import_irn_format(toy_data, tmp_path):
    data = open_dataset(toy_data)
    ids = data.ids("val")
    written = _irn_npy(tmp_path / "result_cam", data, ids)
    result = invoke("cam", "import", "--data", toy_data, "--split", "val", "--npy", tmp_path / "result_cam",
                    "--format", "irn", "--out", tmp_path / "cams")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "cams", "cam")
    assert manifest.stage == "import_irn" and manifest.num_items == len(ids)
    for image_id, entry in written.items():
        cams, classes, extras = FORMATS["cam"].read(tmp_path / "cams" / f"{image_id}.npz", extras=True)
        assert classes.tolist() == entry["keys"].tolist()
        np.testing.assert_array_equal(cams, entry["high_res"])
        np.testing.assert_array_equal(extras["cams_stride4"], entry["cam"].numpy())


def test_cam_import_irn_refuses_other_objects(toy_data, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    data = open_dataset(toy_data)
    ids = data.ids("val")
    written = _irn_npy(tmp_path / "evil", data, ids)
    np.save(tmp_path / "evil" / f"{ids[0]}.npy", {**written[ids[0]], "cam": Evil()}, allow_pickle=True)
    args = ("cam", "import", "--data", toy_data, "--split", "val", "--format", "irn")
    assert_user_error(invoke(*args, "--npy", tmp_path / "evil", "--out", tmp_path / "a"), "refusing to unpickle",
                      "posix.system")
    _irn_npy(tmp_path / "wrong", data, ids)
    np.save(tmp_path / "wrong" / f"{ids[1]}.npy", {k: v for k, v in written[ids[1]].items() if k != "cam"})
    assert_user_error(invoke(*args, "--npy", tmp_path / "wrong", "--out", tmp_path / "b"), "'keys', 'cam'")
    assert not (tmp_path / "a" / "manifest.json").exists() and not (tmp_path / "b" / "manifest.json").exists()
