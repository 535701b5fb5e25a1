"""IRN on the shared stages (irn.md §10) on the toy data: ``cam train --recipe irn``, ``cam infer`` with IRN's fusion
and the stride-4 CAM, IR labels from ``crf labels``, ``irn train`` / ``irn infer``, IRN's released file layouts
through the command line, and pipelines/toy_irn.yaml end to end (``cam import --format irn``: test_cam_import_irn)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.cli.checks import assert_user_error
from tests.stages.cam_artifacts import write_cam_artifact, write_tiny_affinity_net
from tests.stages.test_cam import bilinear_resize
from wsss.artifacts import read_manifest
from wsss.artifacts.items import FORMATS
from wsss.cli.main import cli
from wsss.config import resolve
from wsss.data.prepared import open_dataset
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import UserError
from wsss.models.weights import load_network
from wsss.ops.ir_labels import ir_labels_from_cams
from wsss.ops.irn import propagate_boundaries, semantic_labels
from wsss.ops.multiscale import scaled_images
from wsss.stages import cam_infer, crf_labels, irn_infer, irn_train, pipeline_run
from wsss.stages.cam_train import CamTrainConfig
from wsss.stages.demo import PIPELINES
from wsss.stages.irn_train import top_left_crop


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("irn")


@pytest.fixture(scope="module")
def cam_run(toy_data, root):
    """``cam train --recipe irn`` on tiny: two iterations, no validation; the long side from a config file."""
    (root / "cam.yaml").write_text("resize_long: [40, 64]\n")
    result = invoke("cam", "train", "--data", toy_data, "--split", "train", "--val-split", "", "--recipe", "irn",
                    "--backbone", "tiny", "--crop", 48, "--batch-size", 4, "--max-iters", 2, "--workers", 0,
                    "--device", "cpu", "--config", root / "cam.yaml", "--out", root / "cam")
    assert result.exit_code == 0, result.output
    return root / "cam"


@pytest.fixture(scope="module")
def cams(toy_data, cam_run, root):
    """IRN-fused CAMs of the irn_cam checkpoint: val at scales 1 and 0.5, train at scale 1."""
    for split, scales in (("val", (1.0, 0.5)), ("train", (1.0,))):
        cam_infer.run(cam_infer.CamInferConfig(data=toy_data, split=split, weights=cam_run / "final.pt",
                                               out=root / f"cams_{split}", scales=scales, device="cpu"))
    return {"val": root / "cams_val", "train": root / "cams_train"}


@pytest.fixture(scope="module")
def ir_labels(toy_data, cams, root):
    return {split: crf_labels.run(crf_labels.STAGE.resolve_config(flags={
        "data": toy_data, "split": split, "cams": cams[split], "fg_threshold": 0.3, "bg_threshold": 0.05,
        "out": root / f"ir_{split}"})).path for split in ("train", "val")}


@pytest.fixture(scope="module")
def irn_run(toy_data, cam_run, ir_labels, root):
    cfg = irn_train.IrnTrainConfig(data=toy_data, split="train", labels=ir_labels["train"], backbone="tiny",
                                   init_weights=cam_run / "final.pt", out=root / "irn", crop=80, batch_size=4,
                                   max_iters=2, workers=0, device="cpu", log_every=1)
    return irn_train.run(cfg)


def test_cam_train_recipe_irn(cam_run):
    config = read_manifest(cam_run, "checkpoint").config
    assert (config["recipe"], config["model"], config["lr"], config["weight_decay"], config["epochs"]) == \
        ("irn", "irn_cam", 0.1, 1e-4, 5)
    assert config["psa_momentum_quirk"] and config["poly_power"] == 0.9 and config["jitter"] == [0.0] * 4
    assert (config["crop"], config["batch_size"], config["resize_long"]) == (48, 4, [40, 64])  # flags, --config
    assert load_checkpoint(cam_run / "final.pt")["model"] == "irn_cam"
    irn = resolve(CamTrainConfig, flags={"recipe": "irn"})
    assert (irn.backbone, irn.crop, irn.batch_size, irn.resize_long) == ("resnet50", 512, 16, (320, 640))
    psa = resolve(CamTrainConfig)
    assert (psa.model, psa.weight_decay, psa.epochs, psa.crop) == ("cam", 5e-4, 15, 448)


def test_cam_infer_keeps_irn_stride4_cam(toy_data, cam_run, cams):
    data = open_dataset(toy_data)
    manifest = read_manifest(cams["val"], "cam")
    assert manifest.config["fusion"] == "irn" and manifest.num_items == len(data.ids("val"))
    net = load_network(cam_run / "final.pt")
    image_id = data.ids("val")[0]
    image, labels = data.read_image(image_id), data.labels(image_id)
    h, w = image.shape[:2]
    path = FORMATS["cam"].path(cams["val"], image_id)
    assert len(FORMATS["cam"].read(path)) == 2  # readers that do not ask for the extra array ignore it
    high_res, classes, extras = FORMATS["cam"].read(path, (h, w), 20, extras=True)
    assert classes.tolist() == labels.tolist() and extras["cams_stride4"].shape == (len(labels), -(-h // 4),
                                                                                      -(-w // 4))
    # Independently: per scale map(image) + flip(map(flip)), plain bilinear to the 16-rounded size then cropped
    # (high_res) or straight to the stride-4 grid (cam), summed over scales, each class / (max + 1e-5).
    full, small = np.zeros((len(labels), h, w)), np.zeros((len(labels), -(-h // 4), -(-w // 4)))
    for scaled in scaled_images(image, (1.0, 0.5)):
        x = torch.as_tensor(net.normalization.apply(scaled))[None].float()
        with torch.no_grad():
            pair = net.forward_cam(torch.cat([x, x.flip(-1)])).double().numpy()
        summed = (pair[0] + pair[1][..., ::-1])[labels]
        full += np.stack([bilinear_resize(m, 16 * -(-h // 16), 16 * -(-w // 16))[:h, :w] for m in summed])
        small += np.stack([bilinear_resize(m, *small.shape[1:]) for m in summed])
    for ours, ref in ((high_res, full), (extras["cams_stride4"], small)):
        np.testing.assert_allclose(ours, ref / (ref.reshape(len(ref), -1).max(1)[:, None, None] + 1e-5), atol=1e-5)


def test_cam_infer_fusion_choice_and_family(toy_data, cam_run, root, tmp_path):
    out = tmp_path / "psa_fusion"
    cam_infer.run(cam_infer.CamInferConfig(data=toy_data, split="val", weights=cam_run / "final.pt", out=out,
                                           scales=(1.0,), fusion="psa", device="cpu"))
    item = FORMATS["cam"].read(next(out.glob("*.npz")), extras=True)
    assert item[2] == {} and read_manifest(out, "cam").config["fusion"] == "psa"
    aff = write_tiny_affinity_net(tmp_path / "aff.pt")
    with pytest.raises(UserError, match=r"a network 'aff', expected one of the cam family \(cam, irn_cam\)"):
        cam_infer.run(cam_infer.CamInferConfig(data=toy_data, split="val", weights=aff, out=tmp_path / "x",
                                               device="cpu"))
    assert not (tmp_path / "x").exists()


def test_crf_labels_ir_mode(toy_data, cams, ir_labels):
    data = open_dataset(toy_data)
    manifest = read_manifest(ir_labels["val"], "label")
    config = manifest.config
    assert (config["alpha"], config["bilateral_sxy"], config["bilateral_srgb"], config["iterations"]) == \
        (None, 50.0, 5.0, 10)  # IRN's CRF preset
    for image_id in data.ids("val"):
        image = data.read_image(image_id)
        cam, classes = FORMATS["cam"].read(FORMATS["cam"].path(cams["val"], image_id), image.shape[:2], 20)
        labels = FORMATS["label"].read(FORMATS["label"].path(ir_labels["val"], image_id))
        np.testing.assert_array_equal(labels, ir_labels_from_cams(image, cam, classes))
        assert set(np.unique(labels).tolist()) <= {0, 255, *(classes + 1).tolist()}
    flags = {"data": toy_data, "cams": cams["val"], "fg_threshold": 0.3, "bg_threshold": 0.05, "bilateral_srgb": 7}
    assert crf_labels.STAGE.resolve_config(flags=flags).bilateral_srgb == 7  # a flag beats the preset
    assert crf_labels.STAGE.resolve_config(flags={"alpha": 4}).bilateral_sxy == 80  # PSA's CRF


def test_crf_labels_modes_exclude_each_other(toy_data, cams, tmp_path):
    base = ("crf", "labels", "--data", toy_data, "--split", "val", "--cams", cams["val"], "--out", tmp_path / "o")
    assert_user_error(invoke(*base, "--alpha", 4, "--fg-threshold", 0.3, "--bg-threshold", 0.05), "exclude")
    assert_user_error(invoke(*base), "missing --alpha (PSA) or --fg-threshold and --bg-threshold (IRN)")
    assert_user_error(invoke(*base, "--fg-threshold", 0.3), "--bg-threshold")
    assert_user_error(invoke(*base, "--fg-threshold", 0.05, "--bg-threshold", 0.3), "0 < bg <= fg < 1")
    assert not (tmp_path / "o").exists()


def test_irn_train_two_iterations(toy_data, cam_run, irn_run):
    assert irn_run.kind == "checkpoint" and irn_run.extra["iterations"] == 2
    lines = [json.loads(x) for x in (irn_run.path / "log.jsonl").read_text().splitlines()]
    assert {"loss", "pos_aff", "neg_aff", "dp_fg", "dp_bg", "n_bg_pos", "n_fg_pos", "n_neg"} <= set(lines[0])
    assert all(np.isfinite(line["loss"]) for line in lines if "loss" in line)
    ckpt, cam = load_checkpoint(irn_run.path / "final.pt"), load_checkpoint(cam_run / "final.pt")
    assert ckpt["model"] == "irn" and ckpt["config"]["radius"] == 10
    backbone = {k: v for k, v in cam["state_dict"].items() if k.startswith("backbone.")}
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in backbone.items())  # frozen CAM backbone
    # The mean shift: the mean displacement over top-left 80 px crops of the 24 train images (6 batches of 4).
    net = load_network(irn_run.path / "final.pt")
    stored = net.mean_shift.running_mean.clone()
    assert stored.tolist() == pytest.approx(irn_run.extra["metrics"]["mean_shift"])
    net.mean_shift.running_mean.zero_()
    data = open_dataset(toy_data)
    with torch.no_grad():
        means = [net(top_left_crop(torch.as_tensor(net.normalization.apply(data.read_image(i))).float(), 80)[None])
                 ["displacement"].mean(dim=(0, 2, 3)) for i in data.ids("train")]
    torch.testing.assert_close(torch.stack(means).mean(0), stored, atol=1e-5, rtol=1e-4)


def test_irn_train_input_errors(toy_data, ir_labels, tmp_path):
    with pytest.raises(UserError, match="multiple of 4 of at least 76"):
        irn_train.IrnTrainConfig(data=toy_data, labels=ir_labels["train"], crop=72)
    with pytest.raises(UserError, match="none of the 8 ids of split 'val' has a label PNG"):
        irn_train.run(irn_train.IrnTrainConfig(data=toy_data, split="val", labels=ir_labels["train"],
                                               backbone="tiny", out=tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_irn_infer_label_artifact(toy_data, cams, irn_run, tmp_path):
    data = open_dataset(toy_data)
    cfg = irn_infer.IrnInferConfig(data=toy_data, split="val", cams=cams["val"], weights=irn_run.path / "final.pt",
                                   out=tmp_path / "sem", pad=64, device="cpu")
    manifest = irn_infer.run(cfg)
    ids = data.ids("val")
    assert manifest.kind == "label" and read_manifest(tmp_path / "sem", "label").num_items == len(ids)
    net = load_network(irn_run.path / "final.pt")
    for image_id in ids[:3]:  # the dense reference walk gives the same labels
        image = data.read_image(image_id)
        _, classes, extras = FORMATS["cam"].read(FORMATS["cam"].path(cams["val"], image_id), extras=True)
        boundary = net.infer(torch.as_tensor(net.normalization.apply(image)).float(), pad_size=64)["boundary"]
        walked = propagate_boundaries(torch.from_numpy(extras["cams_stride4"]), boundary, dense=True)
        expected = semantic_labels(walked.float(), classes, image.shape[:2])
        np.testing.assert_array_equal(FORMATS["label"].read(tmp_path / "sem" / f"{image_id}.png"), expected)
    victim = tmp_path / "sem" / f"{ids[2]}.png"  # resume after a kill
    before = victim.read_bytes()
    victim.unlink()
    (tmp_path / "sem" / "manifest.json").rename(tmp_path / "sem" / "manifest.partial.json")
    assert irn_infer.run(cfg).num_items == len(ids) and victim.read_bytes() == before


def test_irn_infer_needs_the_stride4_cams(toy_data, irn_run, tmp_path):
    psa_cams = write_cam_artifact(toy_data, "val", tmp_path / "psa_cams")
    base = ("irn", "infer", "--data", toy_data, "--split", "val", "--cams", psa_cams, "--weights",
            irn_run.path / "final.pt", "--pad", 64, "--device", "cpu")
    assert_user_error(invoke(*base, "--out", tmp_path / "a"), "cams_stride4", "--approx-stride4")
    assert not (tmp_path / "a").exists()
    assert invoke(*base, "--out", tmp_path / "b", "--approx-stride4").exit_code == 0
    assert read_manifest(tmp_path / "b", "label").num_items == 8
    assert_user_error(invoke(*base, "--out", tmp_path / "c", "--threshold", 1), "--threshold")


def test_released_irn_files_through_the_cli(toy_data, tmp_path):
    """res50_cam.pth.pth and res50_irn.pth layouts (our exports of random ResNet-50 networks) on one toy image."""
    from wsss.models import build_model
    from wsss.models.irn import loss_buffer_shapes

    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    (data / "splits" / "one.txt").write_text(open_dataset(toy_data).ids("val")[0] + "\n")
    torch.manual_seed(0)
    torch.save(build_model("irn_cam", backbone="resnet50").export_original_state_dict(), tmp_path / "cam.pth")
    irn = build_model("irn", backbone="resnet50").export_original_state_dict()
    irn.update({k: torch.zeros(1, dtype=torch.int64 if k != "disp_target" else torch.float32).expand(*shape)
                for k, shape in loss_buffer_shapes().items()})  # the loss-only buffers, 1,056 keys in all
    torch.save(irn, tmp_path / "irn.pth")
    common = ("--data", data, "--split", "one", "--device", "cpu")
    result = invoke("cam", "infer", *common, "--model", "irn_cam", "--weights", tmp_path / "cam.pth", "--scales", 1,
                    "--out", tmp_path / "cams")
    assert result.exit_code == 0, result.output
    assert "cams_stride4" in FORMATS["cam"].read(next((tmp_path / "cams").glob("*.npz")), extras=True)[2]
    result = invoke("irn", "infer", *common, "--weights", tmp_path / "irn.pth", "--cams", tmp_path / "cams",
                    "--pad", 64, "--out", tmp_path / "sem")
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "sem", "label").num_items == 1


def test_toy_irn_recipe_end_to_end(toy_data, tmp_path):
    """pipelines/toy_irn.yaml with two iterations per training stage, one scale and a 64 px pad on the toy data."""
    recipe = pipeline_run.load_recipe(PIPELINES / "toy_irn.yaml")
    names = [s["name"] for s in recipe["stages"]]
    overrides = ["cam_train.max_iters=2", "irn_train.max_iters=2", "irn_train.batch_size=4"]
    overrides += [f"{n}.scales=[1.0]" for n in names if n.startswith("cam_infer")]
    overrides += [f"{n}.pad=64" for n in names if n.startswith("irn_infer")]
    results = pipeline_run.run(pipeline_run.PipelineRunConfig(
        recipe=PIPELINES / "toy_irn.yaml", data=toy_data, out=tmp_path / "run", device="cpu", workers=0,
        overrides=tuple(overrides)))
    assert [r.status for r in results] == ["ran"] * len(names)
    reported = {s["name"] for s in recipe["stages"] if s.get("report")}
    assert {"cam_infer_val", "ir_labels_val", "irn_infer_val"} <= reported
    assert load_checkpoint(tmp_path / "run" / "cam_train" / "final.pt")["model"] == "irn_cam"
    for split in ("train", "val"):
        for stage in ("eval_cam", "eval_ir", "eval_irn"):
            metrics = json.loads((tmp_path / "run" / f"{stage}_{split}" / "metrics.json").read_text())
            assert metrics["split"] == split and 0 <= metrics["miou"] <= 1
