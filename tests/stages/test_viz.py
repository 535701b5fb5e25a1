"""``wsss viz``: overlays of a label or CAM artifact, and its input errors."""
import re

import numpy as np
from click.testing import CliRunner

from wsss.artifacts import OutputDir
from wsss.cli.main import cli
from wsss.data.prepared import open_dataset
from wsss.data.palette import write_label_png
from wsss.stages.viz import cam_overlay, heat_colors, label_overlay

from tests.stages.cam_artifacts import write_cam_artifact


def test_overlays_hand_checked():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 1]], np.uint8)
    out = label_overlay(image, labels, alpha=0.6)
    assert out[0, 1].tolist() == [int(100 * 0.4 + 128 * 0.6), 40, 40]  # class 1 is (128, 0, 0)
    assert out[0, 0].tolist() == [80, 80, 80]  # background keeps more of the image: weight 0.2 on black
    assert heat_colors(np.array([[0.0, 1.0]]))[0].tolist() == [[30, 60, 200], [220, 30, 30]]
    assert cam_overlay(image, np.zeros((0, 2, 2), np.float32)).shape == (2, 2, 3)


def test_viz_labels_and_cams(toy_data, tmp_path):
    data = open_dataset(toy_data)
    ids = data.ids("val")
    out = OutputDir.open(tmp_path / "gt", kind="label", stage="test", config={})
    for image_id in ids:
        out.write_item(image_id, ".png", lambda p, m=data.read_mask(image_id): write_label_png(p, m))
    out.complete(len(ids), split="val")
    cams = write_cam_artifact(toy_data, "val", tmp_path / "cams")
    runner = CliRunner()
    for flag, folder in (("--labels", tmp_path / "gt"), ("--cams", cams)):
        result = runner.invoke(cli, ["viz", "--data", str(toy_data), "--split", "val", flag, str(folder),
                                     "--out", str(tmp_path / f"viz{flag}"), "--limit", "3"])
        assert result.exit_code == 0, result.output
        page = (tmp_path / f"viz{flag}" / "index.html").read_text()
        images = re.findall(r'<img src="([^"]+)"', page)
        assert len(images) == 9 and all((tmp_path / f"viz{flag}" / i).is_file() for i in images)
    both = runner.invoke(cli, ["viz", "--data", str(toy_data), "--split", "val", "--labels", str(tmp_path / "gt"),
                               "--cams", str(cams), "--out", str(tmp_path / "x")])
    assert both.exit_code == 2 and "exactly one of" in both.output.strip().splitlines()[-1]
    wrong = runner.invoke(cli, ["viz", "--data", str(toy_data), "--split", "val", "--labels", str(cams),
                                "--out", str(tmp_path / "y")])
    assert wrong.exit_code == 2 and "expected a 'label' artifact" in wrong.output.strip().splitlines()[-1]
