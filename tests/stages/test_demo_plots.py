"""The demo report's charts (matplotlib, PNG + SVG) and its colour legend, on hand-made compare rows."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from wsss.data.palette import VOC_PALETTE
from wsss.stages.compare import Row
from wsss.stages.demo_plots import ROLE_COLOURS, legend_html, miou_chart, stage_role, threshold_curves


def _row(tmp_path, evaluated, stage, miou, background="", curve=None, split="val"):
    path = tmp_path / f"{evaluated}_{split}.json"
    path.write_text(json.dumps({"kind": "metrics", "curve": curve}))
    return Row(method="toy_psa", stage=stage, evaluated=evaluated, split=split, miou=miou, miou_fg=None,
               threshold=None, background=background, dataset="d", path=str(path))


def _curve():
    thresholds = [0.0, 0.1, 0.2, 0.3]
    return {"thresholds": thresholds, "miou": [0.1, 0.3, 0.5, 0.4], "best_threshold": 0.2, "best_miou": 0.5}


def _colour_pixels(png, hex_colour: str) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB"), int)
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(-1) < 12).sum())


def test_roles_follow_the_stage_and_the_background(tmp_path):
    assert stage_role(_row(tmp_path, "eval_cam_val", "cam_infer", 0.5, background="const 0.5")) == "CAM"
    assert stage_role(_row(tmp_path, "eval_rw_val", "aff_infer", 0.6)) == "pseudo labels"
    assert stage_role(_row(tmp_path, "eval_val", "single_infer", 0.7)) == "final"
    assert stage_role(_row(tmp_path, "eval_seg_val", "seg_infer", 0.7)) == "final"


def test_miou_chart_draws_one_bar_per_row_in_its_role_colour(tmp_path):
    grouped = {"val": [_row(tmp_path, "eval_cam_val", "cam_infer", 0.5, background="const 0.5"),
                       _row(tmp_path, "eval_rw_val", "aff_infer", 0.6),
                       _row(tmp_path, "eval_val", "single_infer", 0.7)]}
    names = miou_chart(grouped, tmp_path / "miou")
    assert names == ["miou.png", "miou.svg"]
    svg = (tmp_path / "miou.svg").read_text()
    assert "eval_rw_val" in svg and "<svg" in svg
    counts = {role: _colour_pixels(tmp_path / "miou.png", c) for role, c in ROLE_COLOURS.items()}
    assert all(n > 200 for n in counts.values()), counts
    # Longer bars for larger mIoU: final (0.7) > pseudo labels (0.6) > CAM (0.5).
    assert counts["final"] > counts["pseudo labels"] > counts["CAM"]
    # The same rows give the same bytes (no dates, fixed SVG ids).
    first = (tmp_path / "miou.svg").read_bytes(), (tmp_path / "miou.png").read_bytes()
    miou_chart(grouped, tmp_path / "miou")
    assert ((tmp_path / "miou.svg").read_bytes(), (tmp_path / "miou.png").read_bytes()) == first


def test_threshold_curves_plot_the_swept_cams_only(tmp_path):
    grouped = {"val": [_row(tmp_path, "eval_cam_val", "cam_infer", 0.5, "const 0.2", curve=_curve()),
                       _row(tmp_path, "eval_rw_val", "aff_infer", 0.6)]}
    assert threshold_curves(grouped, tmp_path / "curves") == ["curves.png", "curves.svg"]
    svg = (tmp_path / "curves.svg").read_text()
    assert "eval_cam_val" in svg and "eval_rw_val" not in svg
    assert threshold_curves({"val": grouped["val"][1:]}, tmp_path / "none") == []
    assert not (tmp_path / "none.png").exists()


def test_legend_names_the_shown_classes_in_their_palette_colours():
    page = legend_html(("aeroplane", "bicycle", "bird"), VOC_PALETTE, [0, 2, 255, 2, 9])
    assert "background" in page and "bicycle" in page
    assert "aeroplane" not in page and "bird" not in page  # not shown
    r, g, b = VOC_PALETTE[6:9]  # label 2 = bicycle
    assert f"rgb({r},{g},{b})" in page
    assert page.count("class='swatch'") == 2 and "heat" in page
