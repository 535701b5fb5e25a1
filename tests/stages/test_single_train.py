"""``wsss single train`` on the toy data: two iterations, checkpoint manifest, recipes, user errors."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from wsss.artifacts import read_manifest
from wsss.cli.main import cli
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import UserError
from wsss.stages.single_train import SingleTrainConfig, recipe_for, resolve_config, run


def toy_config(toy_data, out, **kwargs) -> SingleTrainConfig:
    settings = dict(data=toy_data, split="train", val_split="val", backbone="tiny", out=out, batch_size=4, crop=48,
                    max_iters=2, workers=0, device="cpu")
    return SingleTrainConfig(**{**settings, **kwargs})


def test_two_iterations_write_a_checkpoint_run(toy_data, tmp_path):
    manifest = run(toy_config(toy_data, tmp_path / "run", warmup_epochs=0))
    assert manifest.kind == "checkpoint" and manifest.extra["iterations"] == 2
    ckpt = load_checkpoint(manifest.path / "final.pt")
    assert ckpt["model"] == "single_stage" and ckpt["model_kwargs"] == {"backbone": "tiny", "num_classes": 21}
    metrics = manifest.extra["metrics"]
    assert {"loss", "loss_cls", "miou", "score"} <= set(metrics) and 0.0 <= metrics["miou"] <= 1.0
    assert metrics["score"] == pytest.approx(1.0 - metrics["loss"])
    best = manifest.extra["best"]
    assert best.startswith("best_e001_s") and (manifest.path / best).is_file()
    assert read_manifest(manifest.path, "checkpoint").num_items == len(list(manifest.path.glob("*.pt")))
    log = (manifest.path / "log.jsonl").read_text()
    assert "loss_mask" in log and "loss_cls" in log


def test_no_checkpoint_score_during_warm_up_and_bsl_trains(toy_data, tmp_path):
    manifest = run(toy_config(toy_data, tmp_path / "bsl", model="bsl"))
    assert "score" not in manifest.extra["metrics"] and manifest.extra["best"] is None
    assert load_checkpoint(manifest.path / "final.pt")["model"] == "bsl"


def test_recipes_layer_under_config_and_flags(tmp_path):
    cfg = resolve_config(flags={"backbone": "tiny"})
    assert (cfg.crop, cfg.epochs, cfg.lr, cfg.optimizer, cfg.poly_power, cfg.sync_bn) == \
        (96, 30, 1e-4, "adam", 0.0, False)
    assert resolve_config(flags={"backbone": "tiny", "crop": 48}).crop == 48
    default = resolve_config()
    assert (default.backbone, default.crop, default.epochs, default.lr, default.warmup_epochs) == \
        ("wideresnet38", 321, 25, 1e-3, 5)
    config = tmp_path / "c.yaml"
    config.write_text("backbone: resnet50\n")
    r50 = resolve_config(config_file=config)
    assert (r50.crop, r50.epochs, r50.lr) == (448, 21, 5e-4)
    assert recipe_for("bsl", "wideresnet38")["epochs"] == 7
    with pytest.raises(UserError, match="--model"):
        resolve_config(flags={"model": "cam"})  # a network of another family


def test_cli_user_errors(toy_data, tmp_path):
    runner = CliRunner()
    base = ["single", "train", "--data", str(toy_data), "--backbone", "tiny", "--device", "cpu"]
    cases = [
        (base + ["--split", "nope", "--out", str(tmp_path / "a")], "nope"),
        (base + ["--init-weights", str(tmp_path / "none.pth"), "--out", str(tmp_path / "b")], "none.pth"),
        (["single", "train", "--data", str(tmp_path), "--out", str(tmp_path / "c")], str(tmp_path)),
    ]
    for args, needle in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output.strip().splitlines()[-1] and "Traceback" not in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    result = runner.invoke(cli, base + ["--model", "nope", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "nope" in result.output
