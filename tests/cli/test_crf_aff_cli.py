"""`wsss crf labels` and `wsss aff infer` on the command line: runs, summaries, user errors (one line, exit 2)."""
import pytest
from click.testing import CliRunner

from wsss.artifacts import read_manifest
from wsss.cli.main import cli

from tests.stages.cam_artifacts import write_cam_artifact, write_tiny_affinity_net
from tests.cli.checks import assert_user_error


@pytest.fixture(scope="module")
def inputs(toy_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_psa")
    return write_cam_artifact(toy_data, "val", folder / "cams"), write_tiny_affinity_net(folder / "aff.pt")


def invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


@pytest.mark.parametrize("command,options", [
    (("crf", "labels"), ("--cams", "--alpha", "--workers", "--gaussian-sxy", "--gaussian-compat",
                         "--bilateral-sxy", "--bilateral-srgb", "--bilateral-compat", "--iterations")),
    (("aff", "infer"), ("--cams", "--weights", "--alpha", "--beta", "--logt", "--radius", "--backbone",
                        "--device", "--workers")),
])
def test_help(command, options):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    for option in options:
        assert option in result.output


def test_crf_labels_runs_and_says_what_it_wrote(toy_data, inputs, tmp_path):
    cams, _ = inputs
    args = ("crf", "labels", "--data", toy_data, "--split", "val", "--cams", cams, "--alpha", 4,
            "--out", tmp_path / "la", "--iterations", 5, "--bilateral-srgb", 7)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"crf labels: 8 label PNGs (val, alpha 4) in {tmp_path / 'la'}" in result.output
    manifest = read_manifest(tmp_path / "la", kind="label")
    assert manifest.config["iterations"] == 5 and manifest.config["bilateral_srgb"] == 7.0
    assert invoke(*args).exit_code == 0          # complete: nothing to do


def test_crf_labels_config_file_and_flag_precedence(toy_data, inputs, tmp_path):
    cams, _ = inputs
    config = tmp_path / "crf.yaml"
    config.write_text("alpha: 32\niterations: 2\ngaussian_sxy: 5\n")
    result = invoke("crf", "labels", "--data", toy_data, "--split", "val", "--cams", cams, "--alpha", 24,
                    "--out", tmp_path / "ha", "--config", config)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "ha", kind="label")
    assert (manifest.config["alpha"], manifest.config["iterations"], manifest.config["gaussian_sxy"]) == (24, 2, 5)


def test_crf_labels_user_errors(toy_data, inputs, tmp_path):
    cams, _ = inputs
    base = ("crf", "labels", "--data", toy_data, "--split", "val", "--out", tmp_path / "out")
    assert_user_error(invoke(*base, "--cams", tmp_path / "nowhere", "--alpha", 4), "--cams", "no such folder")
    assert_user_error(invoke(*base, "--cams", cams, "--alpha", 0), "--alpha")
    assert_user_error(invoke(*base, "--cams", cams, "--alpha", "four"), "--alpha")
    assert_user_error(invoke(*base, "--cams", cams, "--alpha", 4, "--iterations", -1), "--iterations")
    assert_user_error(invoke("crf", "labels", "--data", toy_data, "--split", "nosuch", "--cams", cams,
                             "--alpha", 4, "--out", tmp_path / "out"), "nosuch")
    assert_user_error(invoke(*base, "--cams", cams), "missing --alpha")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("alpha: -2\n")
    assert_user_error(invoke(*base, "--cams", cams, "--config", bad_config), "--alpha must be > 0")
    bad_config.write_text("alpha: 4\nsxy: 3\n")
    assert_user_error(invoke(*base, "--cams", cams, "--config", bad_config), "unknown option(s) sxy")
    assert_user_error(invoke("crf", "labels", "--data", toy_data, "--split", "val", "--cams", cams, "--alpha", 4,
                             "--out", tmp_path / "x", "--config", tmp_path / "missing.yaml"), "missing.yaml")
    assert not (tmp_path / "out").exists()


def test_aff_infer_runs(toy_data, inputs, tmp_path):
    cams, weights = inputs
    result = invoke("aff", "infer", "--data", toy_data, "--split", "val", "--cams", cams, "--weights", weights,
                    "--out", tmp_path / "rw", "--radius", 3, "--logt", 4, "--alpha", 16, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"aff infer: 8 label PNGs (val) in {tmp_path / 'rw'}" in result.output
    assert read_manifest(tmp_path / "rw", kind="label").config["radius"] == 3


@pytest.mark.parametrize("extra,fragment", [
    (("--alpha", 0), "--alpha"), (("--beta", 0), "--beta"), (("--logt", -1), "--logt"), (("--logt", 1.5), "--logt"),
    (("--radius", 5), "too small for --radius 5"),
])
def test_aff_infer_user_errors(toy_data, inputs, tmp_path, extra, fragment):
    cams, weights = inputs
    result = invoke("aff", "infer", "--data", toy_data, "--split", "val", "--cams", cams, "--weights", weights,
                    "--out", tmp_path / "rw", "--device", "cpu", *extra)
    assert_user_error(result, fragment)


def test_aff_infer_wrong_weights(toy_data, inputs, tmp_path):
    cams, _ = inputs
    not_weights = tmp_path / "notes.pt"
    not_weights.write_text("hello")
    result = invoke("aff", "infer", "--data", toy_data, "--split", "val", "--cams", cams, "--weights", not_weights,
                    "--out", tmp_path / "rw", "--device", "cpu", "--radius", 3)
    assert_user_error(result, "notes.pt")
    assert not (tmp_path / "rw").exists()
