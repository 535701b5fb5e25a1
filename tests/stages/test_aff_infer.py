"""``wsss aff infer`` stage on the toy data with a tiny AffinityNet: artifact, reference agreement, errors."""
import numpy as np
import pytest
import torch

from wsss.artifacts import read_manifest
from wsss.data.prepared import open_dataset
from wsss.data.palette import read_label_png
from wsss.errors import UserError
from wsss.models.normalization import normalization_for
from wsss.models.weights import load_network
from wsss.ops.crf import alpha_background_scores, labels_from_scores
from wsss.ops.random_walk import propagate_cams
from wsss.stages.aff_infer import AffInferConfig, image_affinity, run

from tests.stages.cam_artifacts import toy_cams, write_cam_artifact, write_tiny_affinity_net


@pytest.fixture(scope="module")
def inputs(toy_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("aff")
    cams = write_cam_artifact(toy_data, "val", folder / "cams")
    return cams, write_tiny_affinity_net(folder / "aff.pt")


def config(toy_data, inputs, out, **kw):
    cams, weights = inputs
    kw.setdefault("radius", 3)          # toy images are 64 px: an 8x8 grid, too small for radius 5
    return AffInferConfig(data=toy_data, split="val", cams=cams, weights=weights, out=out, device="cpu", **kw)


def reference_labels(toy_data, weights, image_id, n, alpha, beta, logt, radius):
    """The same image through the reference's dense formulation."""
    data = open_dataset(toy_data)
    network = load_network(weights, model="aff")
    image = data.read_image(image_id)
    x = torch.as_tensor(normalization_for("tiny").apply(image)).float()
    aff = image_affinity(network, x, radius)
    cams, classes = toy_cams(data, image_id, n)
    scores = torch.from_numpy(alpha_background_scores(cams, alpha))
    return labels_from_scores(propagate_cams(scores, aff, beta, logt, radius, dense=True), classes)


def test_random_walk_labels_agree_with_the_dense_reference(toy_data, inputs, tmp_path):
    manifest = run(config(toy_data, inputs, tmp_path / "rw", alpha=16.0, beta=8.0, logt=8))
    ids = open_dataset(toy_data).ids("val")
    assert manifest.kind == "label" and manifest.num_items == len(ids)
    assert read_manifest(tmp_path / "rw", kind="label").config["logt"] == 8
    agree = total = 0
    for n, image_id in enumerate(ids):
        labels = read_label_png(tmp_path / "rw" / f"{image_id}.png")
        expected = reference_labels(toy_data, inputs[1], image_id, n, 16.0, 8.0, 8, 3)
        assert labels.shape == expected.shape
        agree, total = agree + (labels == expected).sum(), total + labels.size
    assert agree / total >= 0.999


def test_alpha_moves_the_background(toy_data, inputs, tmp_path):
    low = run(config(toy_data, inputs, tmp_path / "low", alpha=1.0, logt=2))
    high = run(config(toy_data, inputs, tmp_path / "high", alpha=64.0, logt=2, workers=1))
    fg = [sum((read_label_png(m.path / p.name) > 0).sum() for p in sorted(m.path.glob("*.png"))) for m in (low, high)]
    assert fg[0] < fg[1]


def test_flat_original_layout_weights_load(toy_data, inputs, tmp_path):
    flat = write_tiny_affinity_net(tmp_path / "flat.pth", flat=True)
    cams, _ = inputs
    a = run(config(toy_data, (cams, flat), tmp_path / "a", backbone="tiny", logt=1))
    b = run(config(toy_data, inputs, tmp_path / "b", logt=1))
    for path in sorted(a.path.glob("*.png")):
        assert np.array_equal(read_label_png(path), read_label_png(b.path / path.name))


def test_incomplete_original_weights_are_refused(toy_data, inputs, tmp_path):
    flat = write_tiny_affinity_net(tmp_path / "flat.pth", flat=True)
    state = torch.load(flat, weights_only=True)
    del state["f9.weight"]
    torch.save(state, flat)
    with pytest.raises(UserError, match="f9.weight"):
        run(config(toy_data, (inputs[0], flat), tmp_path / "out", backbone="tiny"))
    assert not (tmp_path / "out").exists()


def test_too_small_for_the_radius_is_a_clear_error(toy_data, inputs, tmp_path):
    with pytest.raises(UserError, match="too small for --radius 5 .*use a smaller --radius"):
        run(config(toy_data, inputs, tmp_path / "out", radius=5))


def test_bad_options_and_inputs(toy_data, inputs, tmp_path):
    for kw, message in (({"alpha": 0.0}, "--alpha must be > 0"), ({"beta": -1.0}, "--beta must be > 0"),
                        ({"logt": -1}, r"--logt must be in \[0, 16\]"), ({"logt": 17}, r"--logt must be in \[0, 16\]")):
        with pytest.raises(UserError, match=message):
            config(toy_data, inputs, tmp_path / "out", **kw)
    cams, _ = inputs
    with pytest.raises(UserError, match="--weights .*missing.pt: file not found"):
        run(config(toy_data, (cams, tmp_path / "missing.pt"), tmp_path / "out"))
    with pytest.raises(UserError, match="--cams .*no such folder"):
        run(config(toy_data, (tmp_path / "nowhere", inputs[1]), tmp_path / "out"))


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_ids(toy_data, inputs, tmp_path):
    import os
    import subprocess
    import sys

    cams, weights = inputs
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
           "-m", "wsss", "aff", "infer", "--data", str(toy_data), "--split", "val", "--cams", str(cams),
           "--weights", str(weights), "--out", str(tmp_path / "ddp"), "--radius", "3", "--logt", "2",
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 of 8 ids to do on rank 0" in result.stderr and "4 of 8 ids to do on rank 1" in result.stderr
    single = run(config(toy_data, inputs, tmp_path / "single", logt=2))
    assert read_manifest(tmp_path / "ddp", kind="label").num_items == single.num_items == 8
    for path in sorted(single.path.glob("*.png")):
        assert np.array_equal(read_label_png(path), read_label_png(tmp_path / "ddp" / path.name))
