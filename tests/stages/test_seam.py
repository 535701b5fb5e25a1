"""SEAM's stages on the toy data: ``seam train`` (2 iterations), ``seam infer``, the chain to the random walk, the
released flat-file layout, wrong files in both directions, SEAM's .npy dicts through ``cam import``, and
pipelines/toy_seam.yaml end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.cli.checks import assert_user_error
from tests.stages.cam_artifacts import write_tiny_affinity_net
from wsss.artifacts import read_manifest
from wsss.artifacts.items import FORMATS
from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.data.transforms import JointTransformConfig
from wsss.engine.checkpoint import load_checkpoint
from wsss.models import build_model
from wsss.models.normalization import normalization_for
from wsss.models.seam import seam_image_cams
from wsss.models.weights import load_network
from wsss.stages import aff_infer, crf_labels, pipeline_run, seam_infer, seam_train

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture(scope="module")
def seam_run(toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seam") / "run"
    cfg = seam_train.SeamTrainConfig(data=toy_data, split="train", val_split="val", backbone="tiny", out=out,
                                     batch_size=4, crop=48, resize_long=(40, 64), max_iters=2, workers=0,
                                     device="cpu", log_every=1)
    return seam_train.run(cfg)


@pytest.fixture(scope="module")
def cams_val(seam_run, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("seam_cams") / "cams"
    return seam_infer.run(seam_infer.SeamInferConfig(data=toy_data, split="val", weights=seam_run.path / "final.pt",
                                                     out=out, device="cpu"))


def test_recipe_defaults_are_seams():
    cfg = seam_train.SeamTrainConfig(out=Path("x"))
    assert (cfg.split, cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.poly_power, cfg.crop) == (
        "train_aug", 8, 8, 0.01, 5e-4, 0.9, 448)
    assert cfg.psa_momentum_quirk and cfg.optimizer == "sgd" and cfg.rvmin_weight == 1.0
    assert cfg.transform_recipe() == JointTransformConfig.seam()
    infer = seam_infer.SeamInferConfig()
    assert infer.scales == (0.5, 1.0, 1.5, 2.0) and infer.flip and infer.png_threshold == 0.26


def test_seam_train_two_iterations(seam_run):
    assert seam_run.kind == "checkpoint" and seam_run.stage == "seam_train" and seam_run.extra["iterations"] == 2
    ckpt = load_checkpoint(seam_run.path / "final.pt")
    assert ckpt["model"] == "seam" and ckpt["model_kwargs"] == {"backbone": "tiny", "num_classes": 20}
    assert 0.0 <= seam_run.extra["metrics"]["mAP"] <= 1.0
    assert read_manifest(seam_run.path, "checkpoint").num_items == len(list(seam_run.path.glob("*.pt")))
    logged = [json.loads(line) for line in next(seam_run.path.glob("*.jsonl")).read_text().splitlines()]
    assert {"loss", "loss_cls", "loss_rvmin", "loss_er", "loss_ecr"} <= set(logged[0])


def test_seam_infer_artifact(cams_val, seam_run, toy_data):
    data = open_dataset(toy_data)
    ids = data.ids("val")
    assert cams_val.kind == "cam" and cams_val.stage == "seam_infer" and cams_val.num_items == len(ids)
    assert cams_val.config["scales"] == [0.5, 1.0, 1.5, 2.0]
    network = load_network(seam_run.path / "final.pt", model="seam")
    fmt = FORMATS["cam"]
    for image_id in ids:
        image = data.read_image(image_id)
        cams, classes = fmt.read(fmt.path(cams_val.path, image_id), image.shape[:2], 20)
        assert classes.tolist() == data.labels(image_id).tolist()
        assert cams.dtype == np.float32 and cams.min() >= 0 and cams.max() <= 1
    expected = seam_image_cams(network, image, classes, 20, normalization_for("tiny"))
    np.testing.assert_allclose(cams, expected, atol=1e-6)


def test_chain_seam_infer_crf_aff(cams_val, toy_data, tmp_path):
    """seam infer -> crf labels (SEAM's alphas 4 and 24) -> aff train (2 iterations) -> aff infer, on toy val."""
    from wsss.stages import aff_train

    la, ha = (crf_labels.run(crf_labels.CrfLabelsConfig(data=toy_data, split="val", cams=cams_val.path, alpha=a,
                                                         out=tmp_path / f"crf_{a}"))
              for a in (4.0, 24.0))
    assert la.kind == ha.kind == "label" and la.num_items == ha.num_items == 8
    aff = aff_train.run(aff_train.AffTrainConfig(data=toy_data, split="val", la=la.path, ha=ha.path, backbone="tiny",
                                                 out=tmp_path / "aff", batch_size=2, crop=64, radius=3,
                                                 max_iters=2, workers=0, device="cpu"))
    rw = aff_infer.run(aff_infer.AffInferConfig(data=toy_data, split="val", cams=cams_val.path,
                                                weights=aff.path / "final.pt", out=tmp_path / "rw", alpha=6.0,
                                                beta=8.0, logt=6, radius=3, device="cpu"))
    assert rw.kind == "label" and rw.num_items == 8
    data = open_dataset(toy_data)
    for image_id in data.ids("val"):
        labels = FORMATS["label"].read(FORMATS["label"].path(rw.path, image_id))
        assert labels.shape == data.read_image(image_id).shape[:2]
        assert set(np.unique(labels).tolist()) <= {0, *(data.labels(image_id) + 1).tolist()}


def _infer_args(toy_data, weights, out, group="seam"):
    return [group, "infer", "--data", str(toy_data), "--split", "val", "--weights", str(weights), "--out", str(out),
            "--scales", "1", "--device", "cpu"]


def test_released_layout_through_the_command(seam_run, toy_data, tmp_path):
    """A flat state dict in SEAM's key layout (what resnet38_SEAM.pth is, here on the tiny backbone) gives the
    same CAMs as our checkpoint of the same weights."""
    network = load_network(seam_run.path / "final.pt", model="seam")
    flat = network.export_original_state_dict()
    assert {"fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight"} <= set(flat)
    assert not any(k.startswith("backbone.") for k in flat)
    torch.save(flat, tmp_path / "seam_flat.pth")
    runner = CliRunner()
    for weights, out in ((seam_run.path / "final.pt", tmp_path / "ours"), (tmp_path / "seam_flat.pth",
                                                                          tmp_path / "flat")):
        result = runner.invoke(cli, _infer_args(toy_data, weights, out))
        assert result.exit_code == 0, result.output
        assert "seam infer: 8 CAM files (val)" in result.output
    for image_id in open_dataset(toy_data).ids("val"):
        with np.load(tmp_path / "ours" / f"{image_id}.npz") as a, np.load(tmp_path / "flat" / f"{image_id}.npz") as b:
            np.testing.assert_array_equal(a["cams"], b["cams"])


def test_wrong_files_both_directions(seam_run, toy_data, tmp_path):
    """A PSA classifier file to `seam infer`, a SEAM file to `cam infer`: one line naming the keys, exit 2, nothing
    written."""
    torch.manual_seed(0)
    torch.save(build_model("cam", backbone="tiny").export_original_state_dict(), tmp_path / "psa_cls.pth")
    network = load_network(seam_run.path / "final.pt", model="seam")
    torch.save(network.export_original_state_dict(), tmp_path / "seam.pth")
    runner = CliRunner()
    result = runner.invoke(cli, _infer_args(toy_data, tmp_path / "psa_cls.pth", tmp_path / "a"))
    assert_user_error(result, "psa_cls.pth", "missing 3 (f8_3.weight, f8_4.weight, f9.weight)",
                      "fc8.weight (20, 128, 1, 1) vs (21, 128, 1, 1)")
    result = runner.invoke(cli, _infer_args(toy_data, tmp_path / "seam.pth", tmp_path / "b", group="cam"))
    assert_user_error(result, "seam.pth", "unexpected 3", "f8_3.weight", "f8_4.weight", "f9.weight",
                      "fc8.weight (21, 128, 1, 1) vs (20, 128, 1, 1)")
    result = runner.invoke(cli, _infer_args(toy_data, seam_run.path / "final.pt", tmp_path / "c", group="cam"))
    assert_user_error(result, "final.pt", "'seam'", "cam")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_seam_npy_dicts_through_cam_import(toy_data, tmp_path):
    """SEAM's out_cam dicts ({0-based class: float32 (H, W)}, present classes only, a few pixels slightly below 0)
    and out_crf dicts ({0: background, c + 1: class c}) import as a cam and a label artifact."""
    data = open_dataset(toy_data)
    ids = data.ids("val")
    rng = np.random.default_rng(0)
    for name in ("out_cam", "out_crf_4.0"):
        (tmp_path / name).mkdir()
    for image_id in ids:
        h, w = data.read_image(image_id).shape[:2]
        cams = {int(c): rng.random((h, w), dtype=np.float32) for c in data.labels(image_id)}
        for v in cams.values():
            v[0, 0] = -0.3  # infer_SEAM.py:76-77 leaves the pixel at the minimum below 0
        crf = {0: rng.random((h, w), dtype=np.float32), **{k + 1: v for k, v in cams.items()}}
        np.save(tmp_path / "out_cam" / f"{image_id}.npy", cams)
        np.save(tmp_path / "out_crf_4.0" / f"{image_id}.npy", crf)
    runner = CliRunner()
    for folder, fmt in (("out_cam", "cam"), ("out_crf_4.0", "crf")):
        result = runner.invoke(cli, ["cam", "import", "--data", str(toy_data), "--split", "val", "--npy",
                                     str(tmp_path / folder), "--format", fmt, "--out", str(tmp_path / f"imp_{fmt}")])
        assert result.exit_code == 0, result.output
    image_id = ids[0]
    cams = np.load(tmp_path / "out_cam" / f"{image_id}.npy", allow_pickle=True).item()
    crf = np.load(tmp_path / "out_crf_4.0" / f"{image_id}.npy", allow_pickle=True).item()
    got, classes = FORMATS["cam"].read(tmp_path / "imp_cam" / f"{image_id}.npz")
    assert classes.tolist() == sorted(cams) and got.min() == 0 and got[:, 0, 0].tolist() == [0.0] * len(cams)
    np.testing.assert_array_equal(got[:, 1:], np.stack([cams[k] for k in sorted(cams)])[:, 1:])
    keys = sorted(crf)
    expected = np.asarray(keys)[np.stack([crf[k] for k in keys]).argmax(0)]
    np.testing.assert_array_equal(FORMATS["label"].read(tmp_path / "imp_crf" / f"{image_id}.png"), expected)


def _recipe_configs(name: str) -> dict:
    """Stage name -> resolved config of a recipe of pipelines/ (nothing run)."""
    import importlib

    from wsss.stages.table import stage_row

    path = PIPELINES / f"{name}.yaml"
    recipe = pipeline_run.load_recipe(path)
    mapping = {"data": "d", "run": "r", **{s["name"]: f"r/{s['name']}" for s in recipe["stages"]}}
    run_cfg = pipeline_run.PipelineRunConfig(recipe=path, data=Path("d"), out=Path("r"))
    configs = {}
    for stage in recipe["stages"]:
        module = importlib.import_module(stage_row(stage["run"]).module)
        configs[stage["name"]] = pipeline_run._stage_config(stage, module, module.STAGE.config, mapping, run_cfg,
                                                            path)
    return configs


def test_seam_recipe_has_the_published_settings():
    """pipelines/seam.yaml: A4-A7 of the SEAM spec (train_SEAM, infer_SEAM, CRF 4/24, train_aff lr 0.01,
    infer_aff 6/8/6, evaluation.py's sweep 0.00..0.59 and out_cam_pred_alpha 0.26)."""
    c = _recipe_configs("seam")
    assert c["seam_train"] == seam_train.SeamTrainConfig(data=Path("d"), out=Path("r/seam_train"), split="train_aug",
                                                         val_split="val", backbone="wideresnet38", overwrite=True)
    assert c["seam_infer"].split == "train_aug" and c["seam_infer"].scales == (0.5, 1.0, 1.5, 2.0)
    assert (c["crf_la"].alpha, c["crf_ha"].alpha) == (4, 24) and c["crf_la"].iterations == 10
    assert (c["aff_train"].lr, c["aff_train"].batch_size, c["aff_train"].epochs) == (0.01, 8, 8)
    for name in ("aff_infer_train", "aff_infer_val"):
        assert (c[name].alpha, c[name].beta, c[name].logt) == (6, 8, 6)
    assert c["eval_cam_train_curve"].thresholds == c["eval_cam_val_curve"].thresholds == (0.0, 0.59, 0.01)
    assert c["eval_cam_train"].threshold == 0.26
    toy = _recipe_configs("toy_seam")
    assert toy["seam_train"].backbone == toy["aff_train"].backbone == "tiny"


def test_toy_seam_recipe_end_to_end(toy_data, tmp_path):
    """pipelines/toy_seam.yaml with two iterations per training stage (and one scale) on the 64 px toy data."""
    recipe = pipeline_run.load_recipe(PIPELINES / "toy_seam.yaml")
    names = [s["name"] for s in recipe["stages"]]
    overrides = ["seam_train.max_iters=2", "seam_train.batch_size=2", "aff_train.max_iters=2",
                 "aff_train.batch_size=2", "aff_train.radius=3"]
    overrides += [f"{n}.scales=[1.0]" for n in names if n.startswith("seam_infer")]
    overrides += [f"{n}.radius=3" for n in names if n.startswith("aff_infer")]  # 64 px: an 8x8 grid
    results = pipeline_run.run(pipeline_run.PipelineRunConfig(
        recipe=PIPELINES / "toy_seam.yaml", data=toy_data, out=tmp_path / "run", device="cpu", workers=0,
        overrides=tuple(overrides)))
    assert [r.status for r in results] == ["ran"] * len(names)
    reported = {s["name"] for s in recipe["stages"] if s.get("report")}
    assert {"seam_infer_val", "aff_infer_val"} <= reported
    for split in ("train", "val"):
        metrics = json.loads((tmp_path / "run" / f"eval_cam_{split}" / "metrics.json").read_text())
        curve = metrics["curve"]
        assert len(curve["thresholds"]) == 60 and curve["thresholds"][-1] == 0.59  # SEAM's evaluation.py sweep
        assert metrics["split"] == split and 0 <= metrics["miou"] <= 1
        rw = json.loads((tmp_path / "run" / f"eval_rw_{split}" / "metrics.json").read_text())
        assert 0 <= rw["miou"] <= 1
