"""``wsss data toy`` and ``wsss data prepare voc`` through CliRunner (coco: test_coco.py; folder: test_folder.py)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from wsss.cli.main import cli
from wsss.data.prepared import open_dataset


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def _assert_user_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsss: error: "), result.output
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


def test_help():
    for args in (["data", "--help"], ["data", "toy", "--help"], ["data", "prepare", "voc", "--help"]):
        result = _run(*args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_toy_then_prepare(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "data"
    result = _run("data", "toy", "--out", str(raw), "--n-train", "6", "--n-val", "3", "--size", "40", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert (raw / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir() and not list(tmp_path.glob(".raw.tmp*"))
    result = _run("data", "prepare", "voc", "--voc-root", str(raw / "VOCdevkit" / "VOC2012"),
                  "--sbd-root", str(raw / "benchmark_RELEASE"), "--out", str(data))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "train: 6 ids (6 VOC masks, 0 SBD masks)" in lines
    assert "train_aug: 9 ids (6 VOC masks, 3 SBD masks)" in lines
    assert len(open_dataset(data).ids("train_aug")) == 9


def test_prepare_without_sbd_says_so(toy_root, tmp_path):
    result = _run("data", "prepare", "voc", "--voc-root", str(toy_root / "VOCdevkit"), "--out", str(tmp_path / "d"))
    assert result.exit_code == 0, result.output
    assert "train_aug: not written (no --sbd-root given)" in result.output.splitlines()


def test_toy_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    _assert_user_error(_run("data", "toy", "--out", str(tmp_path)), "--out", "not empty", "--overwrite")
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args", [["--n-train", "0"], ["--size", "10"], ["--n-val", "x"]])
def test_toy_bad_numbers_are_usage_errors(tmp_path, args):
    result = _run("data", "toy", "--out", str(tmp_path / "t"), *args)
    assert result.exit_code == 2 and not (tmp_path / "t").exists()


def test_prepare_bad_inputs(tmp_path, toy_root):
    _assert_user_error(_run("data", "prepare", "voc", "--voc-root", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "d")), "--voc-root", "no such folder")
    _assert_user_error(_run("data", "prepare", "voc", "--voc-root", str(toy_root), "--sbd-root", str(tmp_path),
                            "--out", str(tmp_path / "d")), "--sbd-root", "not an SBD folder")
    (tmp_path / "file").write_text("x")
    _assert_user_error(_run("data", "prepare", "voc", "--voc-root", str(toy_root), "--out", str(tmp_path / "file")),
                       "--out", "regular file")
