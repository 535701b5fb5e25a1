"""Importing the reference code's pickled .npy dicts, without general unpickling."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.data.palette import read_label_png
from wsss.errors import UserError
from wsss.stages.cam_import import load_reference_dict


def _reference_files(folder, data, ids, fmt):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for image_id in ids:
        h, w = data.read_image(image_id).shape[:2]
        labels = data.labels(image_id)
        if fmt == "cam":
            d = {int(c): rng.random((h, w), dtype=np.float32) for c in labels}
        else:
            d = {0: rng.random((h, w), dtype=np.float32), **{int(c) + 1: rng.random((h, w), dtype=np.float32)
                                                          for c in labels}}
        np.save(folder / f"{image_id}.npy", d)  # how PSA/SEAM write them
    return folder


def test_import_psa_cams_and_crf(toy_data, tmp_path):
    data = open_dataset(toy_data)
    ids = data.ids("val")
    cams_npy = _reference_files(tmp_path / "out_cam", data, ids, "cam")
    crf_npy = _reference_files(tmp_path / "out_la_crf", data, ids, "crf")
    runner = CliRunner()
    r = runner.invoke(cli, ["cam", "import", "--data", str(toy_data), "--split", "val", "--npy", str(cams_npy),
                            "--format", "cam", "--out", str(tmp_path / "cams")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["cam", "import", "--data", str(toy_data), "--split", "val", "--npy", str(crf_npy),
                            "--format", "crf", "--out", str(tmp_path / "la")])
    assert r.exit_code == 0, r.output
    image_id = ids[0]
    ref = load_reference_dict(cams_npy / f"{image_id}.npy")
    with np.load(tmp_path / "cams" / f"{image_id}.npz") as z:
        assert z["classes"].tolist() == sorted(ref)
        np.testing.assert_array_equal(z["cams"], np.stack([ref[k] for k in sorted(ref)]))
    crf = load_reference_dict(crf_npy / f"{image_id}.npy")
    keys = sorted(crf)
    expected = np.asarray(keys)[np.stack([crf[k] for k in keys]).argmax(0)]
    np.testing.assert_array_equal(read_label_png(tmp_path / "la" / f"{image_id}.png"), expected)


def test_import_refuses_other_pickles_and_wrong_keys(toy_data, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.npy"
    arr = np.empty((), dtype=object)
    arr[()] = {0: Evil()}
    with open(bad, "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_reference_dict(bad)
    data = open_dataset(toy_data)
    ids = data.ids("val")
    folder = _reference_files(tmp_path / "cams_as_crf", data, ids, "cam")
    r = CliRunner().invoke(cli, ["cam", "import", "--data", str(toy_data), "--split", "val", "--npy", str(folder),
                                 "--format", "crf", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "do not fit --format crf" in r.output.strip().splitlines()[-1]
    (folder / f"{ids[0]}.npy").unlink()
    r = CliRunner().invoke(cli, ["cam", "import", "--data", str(toy_data), "--split", "val", "--npy", str(folder),
                                 "--format", "cam", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "have no .npy" in r.output and not (tmp_path / "y").exists()
