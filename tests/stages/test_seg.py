"""``wsss seg train / infer / pack / import`` on the toy data: a chain through the pipeline runner, the recipe
presets, that training never reads the ground truth, the inference maths, the server archive, and user errors."""
from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from tests.cli.checks import assert_user_error
from wsss.artifacts import OutputDir, read_manifest
from wsss.cli.main import cli
from wsss.config import resolve
from wsss.data.palette import read_label_png, write_label_png
from wsss.data.prepared import PreparedData, open_dataset
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import UserError
from wsss.models.normalization import Normalization
from wsss.stages import pipeline_run, seg_import, seg_infer, seg_train
from wsss.stages.seg_recipes import INFER_PRESETS, TRAIN_PRESETS

TRAIN = {"split": "train", "backbone": "tiny", "batch_size": 2, "accum_steps": 2, "crop": 48, "max_iters": 2,
         "workers": 0, "device": "cpu", "log_every": 1}


def pseudo_labels(data, image_id):
    """A pseudo label from the ground truth: ignore band to background, every 4th column of objects to ignore."""
    mask = data.read_mask(image_id).copy()
    mask[mask == 255] = 0
    mask[(mask > 0) & (np.arange(mask.shape[1])[None] % 4 == 0)] = 255
    return mask


def write_artifact(folder, data, ids, split, labels=pseudo_labels):
    out = OutputDir.open(folder, kind="label", stage="aff_infer", config={"fake": str(folder)})
    for image_id in ids:
        out.write_item(image_id, ".png", lambda p, m=labels(data, image_id): write_label_png(p, m))
    out.complete(num_items=len(ids), split=split)
    return folder


@pytest.fixture(scope="module")
def data(toy_data):
    return open_dataset(toy_data)


@pytest.fixture(scope="module")
def labels(data, tmp_path_factory):
    return write_artifact(tmp_path_factory.mktemp("seg_labels") / "rw", data, data.ids("train"), "train")


@pytest.fixture(scope="module")
def chain(toy_data, labels, tmp_path_factory):
    """seg train (2 updates of 2 x 2) -> seg infer val (raw and CRF) -> eval -> seg pack, as a pipeline."""
    root = tmp_path_factory.mktemp("seg_chain")
    recipe = root / "toy_seg.yaml"
    recipe.write_text(yaml.safe_dump({"name": "toy_seg", "stages": [
        {"name": "seg_train", "run": "seg_train", "with": {**TRAIN, "labels": str(labels)}},
        {"name": "seg_infer_val", "run": "seg_infer", "with": {"split": "val", "weights": "${seg_train}/final.pt"}},
        {"name": "seg_infer_val_crf", "run": "seg_infer", "with": {"split": "val", "weights": "${seg_train}/final.pt",
                                                                   "crf": True, "flip": True, "scales": [1, 0.5]}},
        {"name": "eval_val", "run": "eval", "with": {"split": "val", "pred": "${seg_infer_val}"}},
        {"name": "seg_pack", "run": "seg_pack", "with": {"split": "val", "pred": "${seg_infer_val_crf}",
                                                         "out": "${run}/results.tar.gz"}},
    ]}, sort_keys=False))
    results = pipeline_run.run(pipeline_run.PipelineRunConfig(recipe=recipe, data=toy_data, out=root / "run"))
    assert [r.status for r in results] == ["ran"] * 5
    return root / "run"


def test_chain_train_infer_eval_pack(chain, data):
    m = read_manifest(chain / "seg_train", "checkpoint")
    assert m.extra["iterations"] == 2 and m.config["recipe"] == "dlp-coco" and m.config["accum_steps"] == 2
    assert m.inputs["labels"]["manifest_sha256"]
    ckpt = load_checkpoint(chain / "seg_train" / "final.pt")
    assert ckpt["model"] == "deeplabv2_resnet101" and ckpt["model_kwargs"]["num_classes"] == 21
    assert tuple(ckpt["model_kwargs"]["msc_scales"]) == (0.5, 0.75)
    log = [json.loads(x) for x in (chain / "seg_train" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "ce_full", "ce_s0.5", "ce_s0.75", "ce"} <= set(log[0])
    assert log[0]["loss"] == pytest.approx(sum(log[0][k] for k in ("ce_full", "ce_s0.5", "ce_s0.75", "ce")))
    for name in ("seg_infer_val", "seg_infer_val_crf"):
        manifest = read_manifest(chain / name, "label")
        assert manifest.num_items == len(data.ids("val")) and manifest.split == "val"
        for image_id in data.ids("val"):
            pred = read_label_png(chain / name / f"{image_id}.png")
            assert pred.shape == data.read_image(image_id).shape[:2] and pred.max() <= data.num_classes
    assert read_manifest(chain / "seg_infer_val_crf", "label").extra["crf"] is True
    metrics = json.loads((chain / "eval_val" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_items"] == 8 and 0 <= metrics["miou"] <= 1


def test_pack_archive_passes_the_server_checks(chain, data):
    """The two checks of VOCevalseg.m (values <= 20, the image's size), a 'P' PNG with the VOC palette each."""
    folder = "results/VOC2012/Segmentation/comp6_val_cls"
    with tarfile.open(chain / "results.tar.gz", "r:gz") as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        assert sorted(names) == sorted(f"{folder}/{i}.png" for i in data.ids("val"))
        for name in names:
            with Image.open(io.BytesIO(tar.extractfile(name).read())) as im:
                image_id = name.rsplit("/", 1)[1][:-4]
                assert im.mode == "P" and im.size == Image.open(data.image_path(image_id)).size
                assert np.asarray(im).max() <= 20 and im.getpalette()[3:6] == [128, 0, 0]
    assert not list(chain.glob("*.partial"))


def test_compare_shows_the_settings_of_the_chain(chain, toy_data, tmp_path):
    """`wsss compare` on the real chain: init (none: no --init-weights), MS/flip and CRF from the manifests."""
    from wsss.stages import compare

    run = tmp_path / "run"
    result = _cli("eval", "--data", toy_data, "--split", "val", "--pred", chain / "seg_infer_val_crf",
                  "--out", run / "eval_crf")
    assert result.exit_code == 0, result.output
    rows = compare.run(compare.CompareConfig(runs=(chain, run)))["val"]
    assert [(r.evaluated, r.stage, r.init, r.ms_flip, r.crf) for r in rows] == [
        ("eval_crf", "seg_infer", "none", "1,0.5 + flip, max", "1/3+67/3/4 x10 deeplab_pytorch"),
        ("eval_val", "seg_infer", "none", "1", "no")]


def test_training_never_reads_the_ground_truth(toy_data, labels, data, tmp_path, monkeypatch):
    cfg = seg_train.SegTrainConfig(data=toy_data, labels=labels, out=tmp_path / "a", **TRAIN)
    seg_train.run(cfg)
    dataset = seg_train.STAGE.dataset(cfg, data, None)
    image_id = dataset.ids[0]
    assert np.array_equal(dataset[0]["mask"].numpy(), pseudo_labels(data, image_id))

    def no_ground_truth(self, image_id):
        raise AssertionError(f"ground-truth mask of {image_id} read")

    monkeypatch.setattr(PreparedData, "read_mask", no_ground_truth)
    monkeypatch.setattr(PreparedData, "mask_path", lambda self, image_id: None)  # the masks are gone
    seg_train.run(dataclasses.replace(cfg, out=tmp_path / "b"))
    a, b = (load_checkpoint(tmp_path / r / "final.pt")["state_dict"] for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_presets_layer_under_config_and_flags(tmp_path):
    required = {"data": "d", "labels": "l", "out": "o"}
    default = resolve(seg_train.SegTrainConfig, flags=required)
    assert (default.recipe, default.model, default.batch_size, default.accum_steps, default.poly_every) == (
        "dlp-coco", "deeplabv2_resnet101", 5, 2, 10)
    seam = resolve(seg_train.SegTrainConfig, flags={**required, "recipe": "seam", "lr": 0.5})
    assert (seam.model, seam.crop, seam.scale_range, seam.scale_choices, seam.lr) == (
        "deeplabv1_resnet38", 448, (0.5, 1.5), None, 0.5)
    config = tmp_path / "c.yaml"
    config.write_text("recipe: irn\ncrop: 65\n")
    irn = resolve(seg_train.SegTrainConfig, config_file=config, flags=required)
    assert (irn.max_iters, irn.loss, len(irn.scale_choices), irn.crop) == (30000, "balanced_ce", 7, 65)
    flag_wins = resolve(seg_train.SegTrainConfig, recipe={"recipe": "irn"}, config_file=config,
                        flags={**required, "recipe": "clip-es"})
    assert (flag_wins.lr, flag_wins.max_iters, flag_wins.crop) == (2e-4, 20000, 65)
    for presets, cls, given in ((TRAIN_PRESETS, seg_train.SegTrainConfig, required),
                                (INFER_PRESETS, seg_infer.SegInferConfig, {"data": "d", "weights": "w", "out": "o"})):
        for name in presets:  # every preset gives a valid config
            assert resolve(cls, flags={**given, "recipe": name}).recipe == name
    assert resolve(seg_infer.SegInferConfig, flags={"recipe": "seam"}).crf_params == (3.0, 3.0, 32.0, 13.0, 10.0, 1.0)
    with pytest.raises(UserError, match="loss must be one of ce, balanced_ce"):
        resolve(seg_train.SegTrainConfig, recipe={"loss": "dice"})
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        resolve(seg_train.SegTrainConfig, recipe={"recipe": "nope"})
    help_text = CliRunner().invoke(cli, ["seg", "train", "--help"]).output
    assert all(f"{name}:" in help_text for name in TRAIN_PRESETS)


def test_network_kwargs_per_model():
    cfg = seg_train.SegTrainConfig(data="d", labels="l", out="o", backbone="tiny")
    assert seg_train.network_kwargs(cfg, 21) == {"num_classes": 21, "backbone": "tiny", "msc_scales": (0.5, 0.75)}
    v1 = seg_train.SegTrainConfig(data="d", labels="l", out="o", model="deeplabv1_resnet38", head="psa", bn="train")
    assert seg_train.network_kwargs(v1, 21) == {"num_classes": 21, "head": "psa", "bn_mode": "train"}
    frozen = seg_train.SegTrainConfig(data="d", labels="l", out="o", bn="frozen")
    assert seg_train.network_kwargs(frozen, 3)["backbone_kwargs"] == {"freeze_bn": True}
    for bad, match in (({"model": "deeplabv3_resnet101", "backbone": "tiny"}, "takes no --backbone"),
                       ({"model": "deeplabv3_resnet101", "bn": "frozen"}, "--bn frozen"),
                       ({"head": "psa"}, "one head")):
        with pytest.raises(UserError, match=match):
            seg_train.network_kwargs(seg_train.SegTrainConfig(data="d", labels="l", out="o", **bad), 21)


class Echo(torch.nn.Module):
    """logits = (channel 0 of the input, minus it): an odd-looking but exactly invertible stand-in network."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return {"logits": torch.stack([x[:, 0], -x[:, 0]], 1)}


def test_merged_logits_undo_flips_and_fuse():
    image = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    identity = Normalization(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), scale=1.0)
    expected = torch.from_numpy(image[..., 0] / 255.0).float()
    for fuse in ("max", "mean"):
        cfg = seg_infer.SegInferConfig(flip=True, fuse=fuse)
        merged = seg_infer.merged_logits(Echo(), image, identity, cfg)
        torch.testing.assert_close(merged, torch.stack([expected, -expected]))
    two = seg_infer.merged_logits(Echo(), image, identity, seg_infer.SegInferConfig(scales=(1.0, 0.5), fuse="mean"))
    assert two.shape == (2, 6, 9)
    half = seg_infer.merged_logits(Echo(), image, identity, seg_infer.SegInferConfig(scales=(0.5,)))
    torch.testing.assert_close(two, (merged + half) / 2)


def test_deeplab_pytorch_crf_image_wraps_like_numpy():
    image = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)  # black, white (RGB)
    wrapped = seg_infer.deeplab_pytorch_crf_image(image)
    # BGR - (104.008, 116.669, 122.675), truncated, modulo 256: -104 -> 152, 150.99 -> 150.
    assert wrapped.tolist() == [[[152, 140, 134], [150, 138, 132]]]
    assert seg_infer.crf_kwargs((1, 3, 67, 3, 4, 10)) == {
        "gaussian_sxy": 1.0, "gaussian_compat": 3.0, "bilateral_sxy": 67.0, "bilateral_srgb": 3.0,
        "bilateral_compat": 4.0, "iterations": 10}


def test_import_plain_folder(toy_data, data, tmp_path):
    src = tmp_path / "plain"
    src.mkdir()
    for image_id in data.ids("val"):
        Image.fromarray(pseudo_labels(data, image_id), mode="L").save(src / f"{image_id}.png")
    cfg = seg_import.SegImportConfig(data=toy_data, split="val", src=src, out=tmp_path / "imported", device="cpu")
    m = seg_import.run(cfg)
    assert m.num_items == 8 and m.extra["source"] == str(src.resolve())
    image_id = data.ids("val")[0]
    assert np.array_equal(read_label_png(tmp_path / "imported" / f"{image_id}.png"), pseudo_labels(data, image_id))
    bad = np.full(data.read_image(image_id).shape[:2], 30, np.uint8)
    Image.fromarray(bad, mode="L").save(src / f"{image_id}.png")
    with pytest.raises(UserError, match=f"{image_id}.png: holds label 30"):
        seg_import.run(dataclasses.replace(cfg, out=tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_user_errors_write_nothing(toy_data, data, labels, tmp_path):
    base = ["seg", "train", "--data", toy_data, "--backbone", "tiny", "--device", "cpu", "--max-iters", 1]
    out = tmp_path / "out"
    assert_user_error(_cli(*base, "--split", "val", "--labels", labels, "--out", out), "none of the 8 ids")
    partial = write_artifact(tmp_path / "partial", data, data.ids("train")[1:], "train")
    assert_user_error(_cli(*base, "--split", "train", "--labels", partial, "--out", out), "no label PNG for 1 of 24")
    extra = write_artifact(tmp_path / "extra", data, data.ids("train") + data.ids("val")[:1], "train")
    assert_user_error(_cli(*base, "--split", "train", "--labels", extra, "--out", out), "not ids of split 'train'")
    first = data.ids("train")[0]
    small = write_artifact(tmp_path / "small", data, data.ids("train"), "train",
                           lambda d, i: pseudo_labels(d, i)[:-2] if i == first else pseudo_labels(d, i))
    assert_user_error(_cli(*base, "--split", "train", "--labels", small, "--out", out), f"{first}.png: label map is")
    truth = write_artifact(tmp_path / "truth", data, data.ids("train"), "train", lambda d, i: d.read_mask(i))
    assert_user_error(_cli(*base, "--split", "train", "--labels", truth, "--out", out), "--allow-ground-truth")
    assert_user_error(_cli(*base, "--split", "train", "--labels", tmp_path, "--out", out), "wsss seg import")
    assert_user_error(_cli(*base, "--labels", labels, "--out", out, "--model", "cam"), "--model")
    config = tmp_path / "c.yaml"
    config.write_text("model: cam\n")
    assert_user_error(_cli(*base, "--labels", labels, "--out", out, "--config", config),
                      "not a network of the seg family")
    assert_user_error(_cli(*base, "--split", "train", "--labels", labels, "--out", out, "--init-weights",
                           tmp_path / "nope.pth"), "file not found")
    assert not out.exists()
    cfg = seg_train.SegTrainConfig(data=toy_data, split="train", labels=truth, out=out, allow_ground_truth=True)
    seg_train.STAGE.check_inputs(cfg, data)  # allowed when asked for


def test_infer_and_pack_user_errors_write_nothing(toy_data, chain, tmp_path):
    out = tmp_path / "out"
    base = ["seg", "infer", "--data", toy_data, "--split", "val", "--device", "cpu", "--out", out]
    assert_user_error(_cli(*base, "--weights", tmp_path / "nope.pt"), "file not found")
    cam = tmp_path / "cam.pt"
    torch.save({"model": "cam", "model_kwargs": {}, "state_dict": {}}, cam)
    assert_user_error(_cli(*base, "--weights", cam), "expected one of the seg family")
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "plain.pth")
    assert_user_error(_cli(*base, "--weights", tmp_path / "plain.pth"), "--model")
    assert not out.exists()
    pack = ["seg", "pack", "--data", toy_data, "--pred", chain / "seg_infer_val"]
    assert_user_error(_cli(*pack, "--out", tmp_path / "r.tar.gz"), "--split test")
    assert_user_error(_cli(*pack, "--split", "train", "--out", tmp_path / "r.tar.gz"), "split 'val'")
    assert_user_error(_cli(*pack, "--split", "val", "--out", tmp_path / "r.zip"), ".tar.gz")
    assert_user_error(_cli(*pack, "--split", "val", "--out", chain / "results.tar.gz"), "already exists")
    assert not (tmp_path / "r.tar.gz").exists() and not (tmp_path / "r.zip").exists()


@pytest.mark.parametrize("problem, message", [("16-bit", "a 16-bit PNG"), ("LA", "a mode LA PNG"),
                                              ("RGB", "a mode RGB PNG"), ("value", "holds label"),
                                              ("size", "prediction is")])
def test_pack_refuses_what_the_server_cannot_read(toy_data, data, chain, tmp_path, problem, message):
    """One line naming the file, exit 2, no archive: a 16-bit or non-P/L PNG (even with valid values), a value
    above the classes, a map one pixel off its image's size."""
    import shutil

    pred = shutil.copytree(chain / "seg_infer_val", tmp_path / "pred")
    image_id = data.ids("val")[0]
    path = pred / f"{image_id}.png"
    labels = read_label_png(path)
    if problem == "16-bit":
        Image.fromarray(labels.astype(np.uint16)).save(path)
    elif problem in ("LA", "RGB"):
        Image.fromarray(labels, mode="L").convert(problem).save(path)
    elif problem == "value":
        write_label_png(path, np.full_like(labels, data.num_classes + 1))
    else:
        write_label_png(path, labels[:-1])
    out = tmp_path / "r.tar.gz"
    result = _cli("seg", "pack", "--data", toy_data, "--pred", pred, "--split", "val", "--out", out)
    assert_user_error(result, f"{image_id}.png", message)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("recipe", ["toy_psa.yaml", "psa.yaml", "seam.yaml", "irn.yaml"])
def test_pipeline_seg_stages_resolve(recipe):
    """The seg stages of the shipped recipes build valid configs (names, values, presets)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pipelines" / recipe
    stages = [s for s in pipeline_run.load_recipe(path)["stages"] if s["run"].startswith("seg_")]
    assert {s["run"] for s in stages} >= {"seg_train", "seg_infer"}
    modules = {"seg_train": seg_train, "seg_infer": seg_infer}
    for stage in stages:
        values = {k: (v.replace("${", "").replace("}", "") if isinstance(v, str) else v)
                  for k, v in stage["with"].items()}
        resolve(modules[stage["run"]].STAGE.config, recipe={"data": "d", "out": "o", **values})


@pytest.mark.parametrize("name, walk, model", [("psa", "aff_infer", "deeplabv1_resnet38"),
                                               ("seam", "aff_infer", "deeplabv1_resnet38"),
                                               ("irn", "irn_infer", "deeplabv2_resnet101")])
def test_pipeline_ends_with_the_final_segmentation(name, walk, model):
    """psa.yaml, seam.yaml and irn.yaml end alike: the walk on train_aug -> seg train with the method's preset ->
    seg infer on val raw and with the CRF (same preset) -> eval of each; nothing runs after."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.yaml"
    stages = pipeline_run.load_recipe(path)["stages"]
    by_name = {s["name"]: s for s in stages}
    tail = [(s["run"], s["name"]) for s in stages[-5:]]
    assert tail == [("seg_train", "seg_train"), ("seg_infer", "seg_infer_val"), ("seg_infer", "seg_infer_val_crf"),
                    ("eval", "eval_seg_val"), ("eval", "eval_seg_val_crf")]
    train = by_name["seg_train"]["with"]
    source = by_name[train["labels"][2:-1]]
    assert source["run"] == walk and source["with"]["split"] == train["split"] == "train_aug"
    assert train["recipe"] == name and "init_weights" not in train
    raw, crf = by_name["seg_infer_val"]["with"], by_name["seg_infer_val_crf"]["with"]
    assert raw["recipe"] == crf["recipe"] == name and raw["split"] == crf["split"] == "val"
    assert raw["weights"] == crf["weights"] == "${seg_train}/final.pt"
    assert not raw.get("crf", False) and crf["crf"] is True and dict(raw, crf=True) == crf
    assert by_name["eval_seg_val"]["with"] == {"split": "val", "pred": "${seg_infer_val}"}
    assert by_name["eval_seg_val_crf"]["with"] == {"split": "val", "pred": "${seg_infer_val_crf}"}
    config = resolve(seg_train.STAGE.config, recipe={"data": "d", "out": "o", "labels": "l",
                                                      **{k: v for k, v in train.items() if k != "labels"}})
    assert config.model == model and config.recipe == name
    if name == "psa":
        assert config.head == "psa"
    if name != "irn":  # the train_aug labels come from the same walk as the evaluated train/val ones
        walk_val = by_name["aff_infer_val"]["with"]
        assert all(source["with"][k] == walk_val[k] for k in ("alpha", "beta", "logt"))
        assert source["with"]["cams"] == by_name["aff_infer_train"]["with"]["cams"]
