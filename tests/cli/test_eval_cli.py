"""`wsss eval` on the command line: the report, and user errors as one line with exit code 2."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.data.palette import write_label_png
from tests.cli.checks import assert_user_error


@pytest.fixture(scope="module")
def data(toy_data):
    return open_dataset(toy_data)


@pytest.fixture
def pred(data, tmp_path):
    """A plain folder of label PNGs for the val split: the ground truth with the ignore band as background."""
    folder = tmp_path / "pred"
    folder.mkdir()
    for image_id in data.ids("val"):
        mask = data.read_mask(image_id)
        write_label_png(folder / f"{image_id}.png", np.where(mask == 255, 0, mask))
    return folder


def invoke(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def test_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--pred", "--cams", "--curve", "--alpha", "--allow-missing", "--workers", "--out"):
        assert option in result.output


def test_report_and_metrics(toy_data, pred, tmp_path):
    result = invoke("--data", toy_data, "--split", "val", "--pred", pred, "--out", tmp_path / "m", "--workers", 0)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(1.0)  # perfect apart from the band, which gt ignores
    assert "mIoU 100.00% (21 classes, with background), 100.00% (20 foreground)" in result.output
    assert "aeroplane" in result.output


def test_missing_prediction(data, toy_data, pred):
    gone = data.ids("val")[3]
    (pred / f"{gone}.png").unlink()
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", pred), "no label PNG for 1 of", gone,
                      "--allow-missing")
    result = invoke("--data", toy_data, "--split", "val", "--pred", pred, "--allow-missing")
    assert result.exit_code == 0, result.output
    assert json.loads((pred / "metrics.json").read_text())["missing"]["ids"] == [gone]
    assert "1 missing" in result.output


def test_extra_prediction(toy_data, pred):
    write_label_png(pred / "2099_000001.png", np.zeros((4, 4), np.uint8))
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", pred), "not ids of split 'val'",
                      "2099_000001")


def test_size_mismatch(data, toy_data, pred):
    wrong = data.ids("val")[0]
    write_label_png(pred / f"{wrong}.png", np.zeros((5, 7), np.uint8))
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", pred, "--workers", 2),
                      "differ in size", wrong, "5x7")
    assert not (pred / "metrics.json").exists()


def test_bad_label_values(data, toy_data, pred):
    bad = data.ids("val")[1]
    write_label_png(pred / f"{bad}.png", np.full(data.read_mask(bad).shape, 40, np.uint8))
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", pred), f"{bad}.png",
                      "pred holds label values [40]")


def test_unknown_split(toy_data, pred):
    assert_user_error(invoke("--data", toy_data, "--split", "nosuch", "--pred", pred), "--split nosuch",
                      "available:")


def test_not_a_dataset_and_not_a_folder(toy_data, pred, tmp_path):
    assert_user_error(invoke("--data", tmp_path, "--split", "val", "--pred", pred), "--data")
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", tmp_path / "nope"), "no such folder")


def test_wrong_artifact_kind(toy_data, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "cam", "stage": "cam_infer", "config": {},
                                                        "num_items": 0}))
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", tmp_path), "--pred",
                      "expected a 'label' artifact")


def test_out_is_a_file(toy_data, pred, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(invoke("--data", toy_data, "--split", "val", "--pred", pred, "--out", tmp_path / "file"),
                      "--out", "regular file")


@pytest.mark.parametrize("args, fragment", [
    ([], "exactly one of --pred"),
    (["--curve"], "only with --cams"),
    (["--alpha", "4"], "only with --cams"),
])
def test_option_conflicts(toy_data, pred, args, fragment):
    base = ["--data", toy_data, "--split", "val"] + (["--pred", pred] if args else [])
    assert_user_error(invoke(*base, *args), fragment)


@pytest.mark.parametrize("args", [["--alpha", "0"], ["--alpha", "x"], ["--threshold", "1.5"],
                                  ["--thresholds", "0,0.5"], ["--thresholds", "0.5,0.1,0.01"],
                                  ["--workers", "-1"]])
def test_usage_errors(toy_data, tmp_path, args):
    result = invoke("--data", toy_data, "--split", "val", "--cams", tmp_path, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert args[0] in result.output
