"""``wsss single train|infer --model wsfcn``: two iterations on the toy data, WS-FCN's recipes layered over the
single-stage ones, its constant background and CRF input, the released flat format auto-detected, COCO (81
classes) and the toy recipe's chain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.cli.checks import assert_user_error
from wsss.artifacts import read_manifest
from wsss.cli.main import cli
from wsss.data.palette import read_label_png
from wsss.data.prepared import open_dataset
from wsss.engine.checkpoint import load_checkpoint
from wsss.models.single_stage import SingleStageNet
from wsss.models.weights import load_network
from wsss.models.wsfcn import WSFCNNet
from wsss.stages import single_infer
from wsss.stages.single_infer import SingleInferConfig, crf_label_map, merge_masks, multiscale_masks
from wsss.stages.single_train import SingleTrainConfig, recipe_for, resolve_config
from wsss.stages.single_train import run as train

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
TRAIN = dict(split="train", backbone="tiny", model="wsfcn", batch_size=4, crop=48, max_iters=2, workers=0,
             device="cpu")


@pytest.fixture(scope="module")
def wsfcn_run(toy_data, tmp_path_factory):
    cfg = SingleTrainConfig(data=toy_data, val_split="val", warmup_epochs=0, out=tmp_path_factory.mktemp("w") / "run",
                            **TRAIN)
    return train(cfg)


@pytest.fixture(scope="module")
def val_labels(wsfcn_run, toy_data, tmp_path_factory):
    """``single infer`` of the two-iteration network on toy val at one scale (the tiny recipe otherwise)."""
    out = tmp_path_factory.mktemp("wi") / "val"
    single_infer.run(SingleInferConfig(data=toy_data, split="val", weights=wsfcn_run.path / "final.pt", out=out,
                                       scales=(1.0,), pad_size=64, device="cpu"))
    return out


# ------------------------------------------------------------------------------------------------------ recipes
def test_wsfcn_recipe_layers_over_the_single_stage_one(tmp_path):
    wsfcn = resolve_config(flags={"model": "wsfcn"})
    assert (wsfcn.backbone, wsfcn.epochs, wsfcn.warmup_epochs, wsfcn.crop, wsfcn.crop_scale, wsfcn.lr) == \
        ("wideresnet38", 31, 7, 321, (0.9, 1.0), 1e-3)
    assert (wsfcn.batch_size, wsfcn.momentum, wsfcn.weight_decay, wsfcn.poly_power, wsfcn.optimizer) == \
        (16, 0.9, 5e-4, 0.0, "sgd")
    single = resolve_config()
    assert (single.model, single.epochs, single.warmup_epochs) == ("single_stage", 25, 5)  # unchanged
    assert recipe_for("wsfcn", "tiny") == recipe_for("single_stage", "tiny")  # the toy recipe
    assert recipe_for("bsl", "wideresnet38")["epochs"] == 7
    config = tmp_path / "c.yaml"
    config.write_text("model: wsfcn\nwarmup_epochs: 2\n")
    layered = resolve_config(config_file=config, flags={"epochs": 3})
    assert (layered.epochs, layered.warmup_epochs, layered.crop) == (3, 2, 321)


def test_wsfcn_infer_recipe_layers_over_the_backbone_one():
    declared = WSFCNNet.stage_recipe("single_infer", "wideresnet38")
    cfg = SingleInferConfig().with_recipe("wideresnet38", declared)
    assert (cfg.bg_const, cfg.crf_bg_alpha, cfg.crf_bilateral_sxy) == (0.25, 5.0, 30.0)
    assert (cfg.scales, cfg.pad_size, cfg.fp_cut, cfg.clean, cfg.bg_pow) == ((1.0, 0.5, 1.5, 2.0), 1024, 0.1, False,
                                                                             3.0)
    assert SingleInferConfig(bg_const=0.4).with_recipe("wideresnet38", declared).bg_const == 0.4  # a flag wins
    single = SingleInferConfig().with_recipe("wideresnet38", SingleStageNet.stage_recipe("single_infer",
                                                                                           "wideresnet38"))
    assert (single.bg_const, single.crf_bg_alpha, single.crf_bilateral_sxy, single.bg_pow) == (None, None, None, 3.0)


def test_constant_background_hand_values():
    masks = torch.tensor([[[0.5]], [[0.3]], [[0.2]]])  # bg, class 0, class 1 at one pixel
    merged = merge_masks(masks, torch.tensor([1.0, 1.0]), bg_pow=3.0, bg_const=0.25)
    torch.testing.assert_close(merged[:, 0, 0], torch.tensor([0.25, 0.3, 0.2]))
    assert merge_masks(masks, torch.tensor([0.0, 0.0]), bg_pow=3.0, bg_const=0.25).argmax(0).item() == 0


def test_crf_input_is_wsfcns_alpha_background(monkeypatch):
    seen = {}
    monkeypatch.setattr("wsss.ops.crf.dense_crf", lambda image, scores, **kw: seen.update(s=scores, kw=kw) or scores)
    image = np.zeros((1, 2, 3), np.uint8)
    merged = np.array([[[0.25, 0.25]], [[0.5, 0.1]], [[0.0, 0.2]]], np.float32)
    labels = crf_label_map(SingleInferConfig(crf_bg_alpha=5.0, crf_bilateral_sxy=30.0), image, merged)
    np.testing.assert_allclose(seen["s"][0, 0], [0.5 ** 5, 0.8 ** 5], rtol=1e-6)  # (1 - max fg) ** 5
    np.testing.assert_array_equal(seen["s"][1:], merged[1:])
    assert seen["kw"] == {"bilateral_sxy": 30.0} and labels.tolist() == [[1, 0]]
    crf_label_map(SingleInferConfig(), image, merged)  # single_stage: the merged masks, the reference CRF
    assert seen["s"] is merged and seen["kw"] == {}


# ---------------------------------------------------------------------------------------------------- the stages
def test_train_two_iterations(wsfcn_run):
    assert wsfcn_run.kind == "checkpoint" and wsfcn_run.extra["iterations"] == 2
    ckpt = load_checkpoint(wsfcn_run.path / "final.pt")
    assert ckpt["model"] == "wsfcn" and ckpt["model_kwargs"] == {"backbone": "tiny", "num_classes": 21}
    assert {"loss", "loss_cls", "miou", "score"} <= set(wsfcn_run.extra["metrics"])
    assert "loss_mask" in (wsfcn_run.path / "log.jsonl").read_text()


def test_infer_uses_the_constant_background(wsfcn_run, val_labels, toy_data):
    manifest = read_manifest(val_labels, "label")
    data = open_dataset(toy_data)
    assert manifest.num_items == len(data.ids("val"))
    assert (manifest.config["bg_const"], manifest.config["crf_bilateral_sxy"], manifest.config["fp_cut"]) == \
        (0.25, 30.0, 0.1)
    network = load_network(wsfcn_run.path / "final.pt")
    image_id = data.ids("val")[0]
    masks, probs = multiscale_masks(network, data.read_image(image_id), network.normalization, (1.0,), True, 64)
    keep = torch.cat([torch.ones(1), (probs > 0.1).float()])[:, None, None]
    expected = torch.cat([torch.full_like(masks[:1], 0.25), masks[1:]]) * keep
    np.testing.assert_array_equal(read_label_png(val_labels / f"{image_id}.png"), expected.argmax(0).numpy())


def test_released_format_through_the_command_model_auto_detected(wsfcn_run, val_labels, toy_data, tmp_path):
    flat = tmp_path / "model_enc_e018Xs0.905.pth"
    state = load_network(wsfcn_run.path / "final.pt").export_original_state_dict()
    torch.save(state, flat)
    base = ["single", "infer", "--data", str(toy_data), "--split", "val", "--scales", "1", "--pad-size", "64",
            "--device", "cpu"]
    result = CliRunner().invoke(cli, base + ["--weights", str(flat), "--out", str(tmp_path / "flat")])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "flat", "label").config["bg_const"] == 0.25
    for png in sorted(val_labels.glob("*.png")):
        np.testing.assert_array_equal(read_label_png(tmp_path / "flat" / png.name), read_label_png(png))
    state["sf2.conv3v.weights"] = state.pop("sf2.conv3v.weight")
    torch.save(state, flat)
    result = CliRunner().invoke(cli, base + ["--weights", str(flat), "--out", str(tmp_path / "bad")])
    assert_user_error(result, "sf2.conv3v.weight")
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_user_errors(toy_data, tmp_path):
    base = ["single", "train", "--data", str(toy_data), "--model", "wsfcn", "--backbone", "tiny", "--device", "cpu"]
    assert_user_error(CliRunner().invoke(cli, base + ["--pamr-iterations", "0", "--out", str(tmp_path / "a")]),
                      "--pamr-iterations")
    config = tmp_path / "c.yaml"
    config.write_text("pseudo_floor: 1.5\n")
    assert_user_error(CliRunner().invoke(cli, base + ["--config", str(config), "--out", str(tmp_path / "b")]),
                      "pseudo_floor")
    result = CliRunner().invoke(cli, ["single", "infer", "--data", str(toy_data), "--weights", str(config),
                                      "--out", str(tmp_path / "c"), "--bg-const", "2"])
    assert result.exit_code == 2 and "--bg-const" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------------- COCO
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under NumPy 2
def test_coco_toy_trains_and_infers_81_classes(tmp_path):
    from wsss.data.coco import prepare_coco
    from wsss.data.toy_coco import write_toy_coco

    write_toy_coco(tmp_path / "raw", n_train=6, n_val=4, size=40, seed=1)
    prepare_coco(tmp_path / "raw", tmp_path / "coco", workers=0)
    coco = {"pamr_iterations": 5, "focal_lambda": 0.1, "pseudo_floor": 0.1, "pseudo_bg_ratio": 0.8}
    manifest = train(SingleTrainConfig(data=tmp_path / "coco", val_split=None, out=tmp_path / "run",
                                       **{**TRAIN, "crop": 32, "batch_size": 2}, **coco))
    ckpt = load_checkpoint(manifest.path / "final.pt")
    assert ckpt["model_kwargs"] == {"backbone": "tiny", "num_classes": 81, **coco}
    network = load_network(manifest.path / "final.pt")
    assert (network.pamr.iterations, network.focal_lambda, network.pseudo_floor, network.pseudo_bg_ratio) == \
        (5, 0.1, 0.1, 0.8)
    labels = single_infer.run(SingleInferConfig(data=tmp_path / "coco", split="val", out=tmp_path / "val",
                                                weights=manifest.path / "final.pt", scales=(1.0,), pad_size=48,
                                                device="cpu"))
    data = open_dataset(tmp_path / "coco")
    assert labels.num_items == len(data.ids("val")) == 2 and len(labels.extra["classes"]) == 80
    assert all(read_label_png(p).max() <= 80 for p in (tmp_path / "val").glob("*.png"))


# ------------------------------------------------------------------------------------------------ the toy recipe
def test_toy_recipe_chains_with_two_iterations(toy_data, tmp_path):
    import json

    from wsss.stages.pipeline_run import PipelineRunConfig, load_recipe
    from wsss.stages.pipeline_run import run as run_pipeline

    recipe = PIPELINES / "toy_wsfcn.yaml"
    stages = load_recipe(recipe)["stages"]
    infer = [s["name"] for s in stages if s["run"] == "single_infer"]
    overrides = ["pretrain.max_iters=2", "pretrain.batch_size=4", "single_train.max_iters=2",
                 "single_train.batch_size=2", "single_train.crop=48"]
    overrides += [f"{name}.{key}" for name in infer for key in ("scales=[1.0]", "pad_size=64")]
    results = run_pipeline(PipelineRunConfig(recipe=recipe, data=toy_data, out=tmp_path / "run", device="cpu",
                                             overrides=tuple(overrides)))
    assert all(r.status == "ran" for r in results) and len(results) == len(stages)
    assert [s["report"] for s in stages if s.get("report")] == ["WS-FCN"]
    assert load_checkpoint(tmp_path / "run" / "single_train" / "final.pt")["model"] == "wsfcn"
    for name in (s["name"] for s in stages if s["run"] == "eval"):
        metrics = json.loads((tmp_path / "run" / name / "metrics.json").read_text())
        assert metrics["split"] in ("train", "val") and 0.0 <= metrics["miou"] <= 1.0
