"""``wsss single infer``: the merging maths, then label artifacts on the toy data (plain, clean, CRF, released
format, resume) and user errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsss.artifacts import read_manifest
from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.data.palette import read_label_png
from wsss.errors import UserError
from wsss.models.normalization import Normalization
from wsss.models.registry import build_model
from wsss.stages.single_infer import SingleInferConfig, centre_pad, merge_masks, multiscale_masks, run
from wsss.stages.single_train import SingleTrainConfig
from wsss.stages.single_train import run as train


@pytest.fixture(scope="module")
def single_run(toy_data, tmp_path_factory):
    cfg = SingleTrainConfig(data=toy_data, split="train", val_split=None, backbone="tiny", batch_size=4, crop=48,
                            max_iters=2, workers=0, device="cpu", out=tmp_path_factory.mktemp("single") / "run")
    return train(cfg)


def test_centre_pad_puts_the_floor_half_left_and_top():
    padded, top, left = centre_pad(torch.ones(1, 1, 3, 5), 8)
    assert (top, left) == (2, 1) and padded.shape == (1, 1, 8, 8)
    assert padded[0, 0, 2:5, 1:6].sum() == 15 and padded.sum() == 15
    with pytest.raises(UserError, match="--pad-size 4"):
        centre_pad(torch.ones(1, 1, 3, 5), 4)


def test_merge_masks_hand_values():
    masks = torch.tensor([[[0.5]], [[0.3]], [[0.2]]])  # bg, class 0, class 1 at one pixel
    merged = merge_masks(masks, torch.tensor([0.0, 1.0]), bg_pow=3.0)
    torch.testing.assert_close(merged[:, 0, 0], torch.tensor([0.125, 0.0, 0.2]))
    assert merged.argmax(0).item() == 2  # 0.2 beats 0.5 ** 3
    with pytest.raises(ValueError, match="labels"):
        merge_masks(masks, torch.ones(3), 1.0)


class EchoNetwork(torch.nn.Module):
    """Test mode stand-in: masks = (channel 0 of the input, 1 - it), scores = the input mean."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"masks": torch.stack([x[:, 0], 1 - x[:, 0]], 1), "scores": x.mean((1, 2, 3))[:, None]}


def test_multiscale_masks_undo_padding_and_flips():
    image = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    identity = Normalization(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), scale=1.0)  # x / 255
    masks, probs = multiscale_masks(EchoNetwork(), image, identity, scales=(1.0,), flip=True, pad_size=16)
    torch.testing.assert_close(masks[0], torch.from_numpy(image[..., 0] / 255.0).float())
    assert masks.shape == (2, 6, 9) and probs.shape == (1,)
    # The padding counts in the score (the reference pads too): mean over 16 x 16 of the normalised input.
    expected = torch.sigmoid(torch.tensor(image.sum() / 255.0 / (3 * 16 * 16))).float()
    torch.testing.assert_close(probs, expected.view(1))
    two = multiscale_masks(EchoNetwork(), image, identity, scales=(1.0, 2.0), flip=False, pad_size=20)[0]
    assert two.shape == (2, 6, 9) and torch.isfinite(two).all()


def check_labels(folder, data, split):
    manifest = read_manifest(folder, "label")
    ids = data.ids(split)
    assert manifest.num_items == len(ids)
    for image_id in ids:
        labels = read_label_png(folder / f"{image_id}.png")
        assert labels.shape == data.read_image(image_id).shape[:2] and labels.max() <= data.num_classes
    return manifest


def test_infer_writes_a_label_artifact_and_resumes(single_run, toy_data, tmp_path):
    data = open_dataset(toy_data)
    cfg = SingleInferConfig(data=toy_data, split="val", weights=single_run.path / "final.pt", out=tmp_path / "p",
                            scales=(1.0, 0.5), device="cpu")
    run(cfg)
    manifest = check_labels(tmp_path / "p", data, "val")
    assert manifest.config["pad_size"] == 256 and manifest.config["bg_pow"] == 3.0  # the tiny recipe
    assert manifest.config["clean"] is False and manifest.extra["labels_from"] == "scores > 0.1"
    victim = sorted((tmp_path / "p").glob("*.png"))[2]
    expected = read_label_png(victim)
    victim.unlink()
    (tmp_path / "p" / "manifest.json").rename(tmp_path / "p" / "manifest.partial.json")
    run(cfg)
    np.testing.assert_array_equal(read_label_png(victim), expected)


def test_infer_clean_with_crf(single_run, toy_data, tmp_path):
    data = open_dataset(toy_data)
    cfg = SingleInferConfig(data=toy_data, split="val", weights=single_run.path / "final.pt", out=tmp_path / "c",
                            scales=(1.0,), clean=True, crf=True, device="cpu")
    run(cfg)
    check_labels(tmp_path / "c", data, "val")
    for image_id in data.ids("val"):
        present = set(np.unique(read_label_png(tmp_path / "c" / f"{image_id}.png")).tolist()) - {0}
        assert present <= set((data.labels(image_id) + 1).tolist())  # clean: only ground-truth classes


def test_infer_accepts_the_authors_flat_format(single_run, toy_data, tmp_path):
    from wsss.models.weights import load_network

    network = load_network(single_run.path / "final.pt")
    flat = tmp_path / "model_enc_e002Xs0.100.pth"
    torch.save(network.export_original_state_dict(), flat)
    common = dict(data=toy_data, split="val", scales=(1.0,), device="cpu")
    run(SingleInferConfig(weights=single_run.path / "final.pt", out=tmp_path / "ours", **common))
    run(SingleInferConfig(weights=flat, backbone="tiny", out=tmp_path / "flat", **common))
    for png in sorted((tmp_path / "ours").glob("*.png")):
        np.testing.assert_array_equal(read_label_png(tmp_path / "flat" / png.name), read_label_png(png))
    with pytest.raises(UserError, match="'single_stage' network, not 'bsl'"):
        run(SingleInferConfig(weights=flat, backbone="tiny", model="bsl", out=tmp_path / "x", **common))


def test_infer_user_errors(single_run, toy_data, tmp_path):
    runner = CliRunner()
    w = str(single_run.path / "final.pt")
    base = ["single", "infer", "--data", str(toy_data), "--device", "cpu"]
    torch.save(build_model("bsl", backbone="tiny", num_classes=5).export_original_state_dict(), tmp_path / "b.pth")
    cases = [
        (base + ["--split", "nope", "--weights", w, "--out", str(tmp_path / "a")], "nope"),
        (base + ["--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")], "missing.pt"),
        (base + ["--weights", w, "--out", str(tmp_path / "c"), "--pad-size", "16"], "--pad-size 16"),
        (base + ["--weights", str(tmp_path / "b.pth"), "--backbone", "tiny", "--out", str(tmp_path / "d")],
         "5 classes"),
    ]
    for args, needle in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output.strip().splitlines()[-1] and "Traceback" not in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()
    assert not (tmp_path / "c" / "manifest.json").exists()
    result = runner.invoke(cli, base + ["--weights", w, "--out", str(tmp_path / "e"), "--scales", "1,0"])
    assert result.exit_code == 2 and "--scales" in result.output
