"""``wsss demo`` end to end on a very small toy set with two-iteration recipes; the HTML report is complete."""
from __future__ import annotations

import re

import yaml

from wsss.stages import demo

TRAIN = {"split": "train", "backbone": "tiny", "batch_size": 4, "max_iters": 2, "workers": 0}


def _write(path, name, stages):
    path.write_text(yaml.safe_dump({"name": name, "stages": stages}, sort_keys=False))
    return path


def _mini_recipes(folder):
    psa = _write(folder / "toy_psa.yaml", "toy_psa", [
        {"name": "cam_train", "run": "cam_train",
         "with": {**TRAIN, "val_split": None, "crop": 64, "resize_long": [64, 80]}},
        {"name": "cam_infer_train", "run": "cam_infer", "with": {"split": "train", "weights": "${cam_train}/final.pt",
                                                                 "scales": [1.0]}},
        {"name": "cam_infer_val", "run": "cam_infer", "report": "CAM", "with": {"split": "val", "weights": "${cam_train}/final.pt",
                                                               "scales": [1.0]}},
        {"name": "eval_cam_val", "run": "eval", "with": {"split": "val", "cams": "${cam_infer_val}", "curve": True}},
        {"name": "crf_la_train", "run": "crf_labels", "with": {"split": "train", "cams": "${cam_infer_train}",
                                                               "alpha": 4}},
        {"name": "crf_ha_train", "run": "crf_labels", "with": {"split": "train", "cams": "${cam_infer_train}",
                                                               "alpha": 32}},
        {"name": "crf_la_val", "run": "crf_labels", "report": "CRF labels", "with": {"split": "val", "cams": "${cam_infer_val}",
                                                             "alpha": 4}},
        {"name": "aff_train", "run": "aff_train", "with": {**TRAIN, "la": "${crf_la_train}", "ha": "${crf_ha_train}",
                                                           "crop": 80, "radius": 3}},
        {"name": "aff_infer_val", "run": "aff_infer", "report": "random walk", "with": {"split": "val", "cams": "${cam_infer_val}",
                                                               "weights": "${aff_train}/final.pt", "logt": 2,
                                                               "radius": 3}},
        {"name": "eval_rw_val", "run": "eval", "with": {"split": "val", "pred": "${aff_infer_val}"}},
    ])
    single = _write(folder / "toy_single_stage.yaml", "toy_single_stage", [
        {"name": "single_train", "run": "single_train", "with": {**TRAIN, "val_split": None, "crop": 64}},
        {"name": "single_infer_val", "run": "single_infer", "report": "single-stage", "with": {"split": "val", "scales": [1.0],
                                                                     "weights": "${single_train}/final.pt"}},
        {"name": "eval_val", "run": "eval", "with": {"split": "val", "pred": "${single_infer_val}"}},
    ])
    return str(psa), str(single)


def test_demo_runs_and_report_is_complete(tmp_path):
    recipes = _mini_recipes(tmp_path)
    cfg = demo.DemoConfig(out=tmp_path / "demo", n_train=8, n_val=4, size=80, recipes=recipes, report_images=3,
                          device="cpu")
    tables, report = demo.run(cfg)
    assert "toy_psa" in tables and "toy_single_stage" in tables and "split val" in tables
    assert (tmp_path / "demo" / "comparison.txt").read_text().strip() == tables.strip()
    page = report.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 3 * 6  # 3 ids x (image, ground truth, CAM, CRF, random walk, single-stage)
    assert all((report.parent / name).is_file() for name in images)
    # The table as a chart, the CAM threshold curves (the recipe sweeps eval_cam_val), the class-colour legend.
    charts = re.findall(r"<img class='chart' src='([^']+)'", page)
    assert charts == ["miou.png", "cam_thresholds.png"]
    assert all((report.parent / name).is_file() and (report.parent / name).with_suffix(".svg").is_file()
               for name in charts)
    assert "class='legend'" in page and "background" in page
    # A rerun reuses the toy data and every complete stage.
    before = (tmp_path / "demo" / "runs" / "toy_psa" / "cam_train" / "manifest.json").stat().st_mtime_ns
    demo.run(cfg)
    assert (tmp_path / "demo" / "runs" / "toy_psa" / "cam_train" / "manifest.json").stat().st_mtime_ns == before
