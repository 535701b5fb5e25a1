"""``wsss pipeline run`` and ``wsss compare`` on small toy recipes: chaining, skip/redo, failures, the table."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from wsss.cli.main import cli
from wsss.errors import UserError
from wsss.stages import compare, pipeline_run

CAM_TRAIN = {"split": "train", "val_split": None, "backbone": "tiny", "crop": 48, "resize_long": [40, 64],
             "batch_size": 4, "max_iters": 2, "workers": 0}


def _recipe(path, name, stages):
    path.write_text(yaml.safe_dump({"name": name, "stages": stages}, sort_keys=False))
    return path


def _cam_recipe(tmp_path, name="toy_cam", scales=(1.0,)):
    return _recipe(tmp_path / f"{name}.yaml", name, [
        {"name": "cam_train", "run": "cam_train", "with": CAM_TRAIN},
        {"name": "cam_infer", "run": "cam_infer",
         "with": {"split": "val", "weights": "${cam_train}/final.pt", "scales": list(scales)}},
        {"name": "eval_cam", "run": "eval", "with": {"split": "val", "cams": "${cam_infer}", "curve": True}},
    ])


def _run(recipe, data, out, **kw):
    return pipeline_run.run(pipeline_run.PipelineRunConfig(recipe=recipe, data=data, out=out, device="cpu", **kw))


def test_pipeline_chains_skips_and_redoes(toy_data, tmp_path):
    recipe = _cam_recipe(tmp_path)
    run_dir = tmp_path / "run"
    first = _run(recipe, toy_data, run_dir)
    assert [r.status for r in first] == ["ran", "ran", "ran"]
    metrics = json.loads((run_dir / "eval_cam" / "metrics.json").read_text())
    assert metrics["split"] == "val" and "curve" in metrics
    assert json.loads((run_dir / "pipeline.json").read_text())["name"] == "toy_cam"
    # Same recipe again: the two artifact stages are complete with the same config and inputs.
    again = _run(recipe, toy_data, run_dir)
    assert [r.status for r in again[:2]] == ["skipped", "skipped"]
    # A changed value redoes that stage only (and what follows it, whose input changed).
    redone = _run(recipe, toy_data, run_dir, overrides=("cam_infer.scales=[1.0, 0.5]",))
    assert [r.status for r in redone[:2]] == ["skipped", "ran"]
    manifest = json.loads((run_dir / "cam_infer" / "manifest.json").read_text())
    assert manifest["config"]["scales"] == [1.0, 0.5]
    # --from / --until select a range.
    only = _run(recipe, toy_data, run_dir, start="cam_infer", stop="cam_infer",
                overrides=("cam_infer.scales=[1.0, 0.5]",))
    assert [(r.name, r.status) for r in only] == [("cam_infer", "skipped")]


def test_reuse_copies_a_complete_twin_and_nothing_else(toy_data, tmp_path):
    recipe = _cam_recipe(tmp_path)
    first = _run(recipe, toy_data, tmp_path / "a")
    # Another run folder: the classifier (same config and inputs) is copied; cam_infer reads another checkpoint
    # path, so it is a different config and runs.
    other = _run(recipe, toy_data, tmp_path / "b", reuse=(tmp_path / "a",))
    assert [r.status for r in other] == ["copied", "ran", "ran"]
    a, b = (json.loads((tmp_path / d / "cam_train" / "manifest.json").read_text()) for d in "ab")
    assert a == b and (tmp_path / "b" / "cam_train" / "final.pt").read_bytes() == \
        (tmp_path / "a" / "cam_train" / "final.pt").read_bytes()
    assert not list(tmp_path.glob("b/*.reuse-tmp"))
    assert json.loads((tmp_path / "b" / "eval_cam" / "metrics.json").read_text())["miou"] == \
        json.loads((tmp_path / "a" / "eval_cam" / "metrics.json").read_text())["miou"]
    # A different config finds no twin; an existing output is never replaced by a copy.
    changed = _run(recipe, toy_data, tmp_path / "c", reuse=(tmp_path / "a",), overrides=("cam_train.max_iters=1",))
    assert changed[0].status == "ran"
    again = _run(recipe, toy_data, tmp_path / "c", reuse=(tmp_path / "a",))
    assert again[0].status == "ran"  # c's own (other config) output is redone in place, not copied over
    # A twin whose input changed since (the data's manifest digest) is not a twin.
    (tmp_path / "a" / "cam_train" / "manifest.json").write_text(
        json.dumps({**a, "inputs": {"data": {**a["inputs"]["data"], "manifest_sha256": "0" * 16}}}))
    assert _run(recipe, toy_data, tmp_path / "d", reuse=(tmp_path / "a",), stop="cam_train")[0].status == "ran"


def test_reuse_flag_on_the_command_line(toy_data, tmp_path):
    recipe = _cam_recipe(tmp_path)
    _run(recipe, toy_data, tmp_path / "a", stop="cam_train")
    result = CliRunner().invoke(cli, ["pipeline", "run", str(recipe), "--data", str(toy_data), "--out",
                                      str(tmp_path / "b"), "--until", "cam_train", "--device", "cpu",
                                      "--reuse", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "copied" in result.output
    missing = CliRunner().invoke(cli, ["pipeline", "run", str(recipe), "--data", str(toy_data), "--out",
                                       str(tmp_path / "e"), "--reuse", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_pipeline_failure_names_the_stage_and_keeps_earlier_ones(toy_data, tmp_path):
    recipe = _recipe(tmp_path / "bad.yaml", "bad", [
        {"name": "cam_train", "run": "cam_train", "with": CAM_TRAIN},
        {"name": "cam_infer", "run": "cam_infer", "with": {"split": "no_such_split",
                                                             "weights": "${cam_train}/final.pt"}},
    ])
    result = CliRunner().invoke(cli, ["pipeline", "run", str(recipe), "--data", str(toy_data), "--out",
                                      str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "stage cam_infer (cam_infer) failed" in last and "no_such_split" in last
    assert (tmp_path / "run" / "cam_train" / "manifest.json").is_file()


@pytest.mark.parametrize("stages, message", [
    ([{"name": "a", "run": "nope"}], "unknown stage 'nope'"),
    ([{"name": "a", "run": "eval"}, {"name": "a", "run": "eval"}], "appears twice"),
    ([{"name": "a", "run": "eval", "with": {"pred": "${missing}"}}], "names no earlier stage"),
    ([], "non-empty list"),
])
def test_bad_recipes(toy_data, tmp_path, stages, message):
    recipe = _recipe(tmp_path / "r.yaml", "r", stages)
    with pytest.raises(UserError, match=message):
        _run(recipe, toy_data, tmp_path / "run")


def test_bad_overrides_and_ranges(toy_data, tmp_path):
    recipe = _cam_recipe(tmp_path)
    with pytest.raises(UserError, match="STAGE.OPTION=VALUE"):
        _run(recipe, toy_data, tmp_path / "run", overrides=("nostage.x=1",))
    with pytest.raises(UserError, match="--from nope"):
        _run(recipe, toy_data, tmp_path / "run", start="nope")
    with pytest.raises(UserError, match="unknown option"):
        _run(recipe, toy_data, tmp_path / "run", overrides=("cam_infer.bogus=1",))


def test_compare_two_runs(toy_data, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    _run(_cam_recipe(tmp_path, "method_a"), toy_data, a)
    _run(_cam_recipe(tmp_path, "method_b", scales=(1.0, 0.5)), toy_data, b)
    grouped = compare.run(compare.CompareConfig(runs=(a, b)))
    rows = grouped["val"]
    assert [r.method for r in rows] == ["method_a", "method_b"]
    assert all(r.stage == "cam_infer" and r.threshold is not None and 0 <= r.miou <= 1 for r in rows)
    text = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert text.exit_code == 0 and "method_a" in text.output and "method_b" in text.output
    csv_out = CliRunner().invoke(cli, ["compare", str(a), str(b), "--format", "csv"]).output.splitlines()
    assert csv_out[0].startswith("method,stage") and len(csv_out) == 3
    as_json = json.loads(CliRunner().invoke(cli, ["compare", str(a), "--format", "json"]).output)
    assert as_json[0]["method"] == "method_a"
    # Results on another split are not mixed into the table unless asked.
    _run(_recipe(tmp_path / "t.yaml", "method_a", [
        {"name": "cam_infer_train", "run": "cam_infer",
         "with": {"split": "train", "weights": "${run}/cam_train/final.pt", "scales": [1.0]}},
        {"name": "eval_train", "run": "eval", "with": {"split": "train", "cams": "${cam_infer_train}"}}]),
         toy_data, a)
    result = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert result.exit_code == 2 and "several splits" in result.output.strip().splitlines()[-1]
    assert CliRunner().invoke(cli, ["compare", str(a), str(b), "--split", "val"]).exit_code == 0
    assert len(compare.run(compare.CompareConfig(runs=(a, b), all_splits=True))) == 2
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such run folder" in result.output
