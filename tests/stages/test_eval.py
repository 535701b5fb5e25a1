"""`wsss eval` stage on the toy data: metrics.json content, label vs plain folders, palette vs grayscale PNGs,
the threshold curve with a known best threshold, the --alpha path, --allow-missing, artifact of another split."""
import json

import numpy as np
import pytest
from PIL import Image

from wsss.artifacts import OutputDir, manifest_digest
from wsss.data.prepared import open_dataset
from wsss.data.palette import write_label_png
from wsss.errors import UserError
from wsss.ops.cam import cams_to_labels
from wsss.ops.confusion import ConfusionMatrix
from wsss.stages.eval import EvalConfig, format_report, run, sweep_range


def noisy_prediction(mask: np.ndarray, k: int) -> np.ndarray:
    """The mask with the ignore band as background, shifted by k % 3 pixels, and a corner of class 1."""
    pred = np.where(mask == 255, 0, mask).astype(np.uint8)
    pred = np.roll(pred, k % 3, axis=1)
    pred[:4, :4] = 1
    return pred


def write_predictions(data, split, folder, grayscale=False):
    folder.mkdir(parents=True, exist_ok=True)
    preds = {}
    for k, image_id in enumerate(data.ids(split)):
        preds[image_id] = noisy_prediction(data.read_mask(image_id), k)
        if grayscale:
            Image.fromarray(preds[image_id], mode="L").save(folder / f"{image_id}.png")
        else:
            write_label_png(folder / f"{image_id}.png", preds[image_id])
    return preds


def expected_matrix(data, preds):
    acc = ConfusionMatrix(data.num_classes + 1)
    for image_id, pred in preds.items():
        acc.update(data.read_mask(image_id), pred)
    return acc.matrix


def known_cams(mask: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per present class: object pixels score 1.0 or 0.235 (alternate columns), every other pixel 0.225.

    With a constant background t, the labels are perfect exactly for 0.225 <= t < 0.235: on a 0.01 grid only
    t = 0.23. With a power background, perfect for ln(0.235)/ln(0.765) < alpha <= ln(0.225)/ln(0.775), i.e.
    5.41 < alpha <= 5.85.
    """
    cams = np.full((len(classes), *mask.shape), 0.225, np.float32)
    object_score = np.where(np.arange(mask.shape[1]) % 2 == 0, 1.0, 0.235).astype(np.float32)
    for row, c in enumerate(classes):
        inside = mask == c + 1
        cams[row][inside] = np.broadcast_to(object_score, mask.shape)[inside]
    return cams


@pytest.fixture(scope="module")
def data(toy_data):
    return open_dataset(toy_data)


@pytest.fixture(scope="module")
def cam_artifact(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_cams") / "cams"
    ids = data.ids("train")
    out = OutputDir.open(folder, kind="cam", stage="test_cams", config={"pattern": "known"}, inputs={})
    for image_id in ids:
        classes = data.labels(image_id)
        cams = known_cams(data.read_mask(image_id), classes)
        out.write_item(image_id, ".npz", lambda p: np.savez(p, cams=cams, classes=classes))
    out.complete(num_items=len(ids), split="train")
    return folder


def test_metrics_of_label_pngs(data, toy_data, tmp_path):
    preds = write_predictions(data, "train", tmp_path / "pred")
    metrics = run(EvalConfig(data=toy_data, split="train", pred=tmp_path / "pred", workers=0))
    cm = expected_matrix(data, preds)
    written = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert not list((tmp_path / "pred").glob(".*tmp*"))  # the atomic write left no temporary file
    assert metrics["kind"] == "metrics" and metrics["stage"] == "eval" and metrics["split"] == "train"
    assert metrics["num_items"] == len(data.ids("train")) and metrics["missing"] == {"count": 0, "ids": []}
    assert metrics["class_names"] == ["background", *data.classes]
    np.testing.assert_array_equal(metrics["confusion_matrix"], cm[:, :-1])
    np.testing.assert_array_equal(metrics["pred_ignored"], 0)
    scores = ConfusionMatrix(cm.shape[0], matrix=cm).compute()
    np.testing.assert_allclose(np.array(metrics["iou"], float), scores["iou"])  # None -> nan
    assert metrics["miou"] == pytest.approx(scores["miou"])
    assert metrics["miou_foreground"] == pytest.approx(scores["miou_foreground"])
    assert 0 < metrics["miou"] < 1 and metrics["pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"])
    assert metrics["inputs"]["data"]["manifest_sha256"] == manifest_digest(toy_data)
    assert metrics["input_has_manifest"] is False and "background" not in metrics
    report = format_report(metrics)
    assert "with background" in report and f"{100 * metrics['miou']:.2f}%" in report
    assert len(report.splitlines()) == len(metrics["class_names"]) + 3


def test_palette_and_grayscale_and_parallel_agree(data, toy_data, tmp_path):
    write_predictions(data, "val", tmp_path / "palette")
    write_predictions(data, "val", tmp_path / "gray", grayscale=True)
    with Image.open(next((tmp_path / "gray").glob("*.png"))) as img:
        assert img.mode == "L"
    a = run(EvalConfig(data=toy_data, split="val", pred=tmp_path / "palette", workers=0))
    b = run(EvalConfig(data=toy_data, split="val", pred=tmp_path / "gray", workers=2))
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["miou"] == b["miou"]


def test_label_artifact_of_another_split_and_out_folder(data, toy_data, tmp_path):
    ids = data.ids("train_aug")
    out = OutputDir.open(tmp_path / "labels", kind="label", stage="test_labels", config={}, inputs={})
    for k, image_id in enumerate(ids):
        pred = noisy_prediction(data.read_mask(image_id), k)
        out.write_item(image_id, ".png", lambda p: write_label_png(p, pred))
    out.complete(num_items=len(ids), split="train_aug")
    metrics = run(EvalConfig(data=toy_data, split="train", pred=tmp_path / "labels", out=tmp_path / "scores",
                             workers=0))
    assert (tmp_path / "scores" / "metrics.json").is_file() and not (tmp_path / "labels" / "metrics.json").exists()
    assert metrics["num_items"] == len(data.ids("train"))
    assert metrics["skipped_outside_split"] == len(set(ids) - set(data.ids("train"))) > 0
    assert metrics["input_has_manifest"] is True
    assert metrics["inputs"]["pred"]["manifest_sha256"] == manifest_digest(tmp_path / "labels")


def test_allow_missing_counts_the_missing_ids(data, toy_data, tmp_path):
    preds = write_predictions(data, "train", tmp_path / "pred")
    gone = sorted(preds)[:2]
    for image_id in gone:
        (tmp_path / "pred" / f"{image_id}.png").unlink()
        del preds[image_id]
    with pytest.raises(UserError, match=f"no label PNG for 2 of .*{gone[0]}"):
        run(EvalConfig(data=toy_data, split="train", pred=tmp_path / "pred", workers=0))
    metrics = run(EvalConfig(data=toy_data, split="train", pred=tmp_path / "pred", allow_missing=True, workers=0))
    assert metrics["missing"] == {"count": 2, "ids": gone}
    assert metrics["num_items"] == len(data.ids("train")) - 2
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected_matrix(data, preds)[:, :-1])


def test_curve_finds_the_known_best_threshold(toy_data, cam_artifact, tmp_path):
    metrics = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, curve=True, out=tmp_path, workers=2))
    curve = metrics["curve"]
    assert curve["thresholds"] == sweep_range((0.0, 0.6, 0.01)) and len(curve["thresholds"]) == 61
    assert curve["best_threshold"] == pytest.approx(0.23)
    assert curve["best_miou"] == pytest.approx(1.0) and metrics["miou"] == pytest.approx(1.0)
    at = dict(zip(curve["thresholds"], curve["miou"]))
    assert at[0.22] < 1 and at[0.24] < 1 and max(curve["miou"]) == curve["best_miou"]
    assert curve["tuned_on_ground_truth"] is True
    assert metrics["background"]["threshold"] == pytest.approx(0.23)
    assert "tuned on the ground truth" in format_report(metrics)


def test_cams_at_one_threshold_match_the_curve_and_the_default(toy_data, cam_artifact, tmp_path):
    curve = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, curve=True, thresholds=(0.1, 0.3, 0.1),
                           out=tmp_path, workers=0))["curve"]
    assert curve["thresholds"] == [0.1, 0.2, 0.3]
    single = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, threshold=0.1, out=tmp_path, workers=0))
    assert single["miou"] == pytest.approx(curve["miou"][0])
    default = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, out=tmp_path, workers=0))
    assert default["background"] == {"mode": "constant", "threshold": 0.2}
    assert default["miou"] == pytest.approx(curve["miou"][1]) and default["miou"] < 1


def test_alpha_background(data, toy_data, cam_artifact, tmp_path):
    perfect = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, alpha=5.6, out=tmp_path, workers=0))
    assert perfect["background"] == {"mode": "power", "alpha": 5.6}
    assert perfect["miou"] == pytest.approx(1.0)
    for alpha in (4.0, 8.0):
        metrics = run(EvalConfig(data=toy_data, split="train", cams=cam_artifact, alpha=alpha, out=tmp_path,
                                 workers=0))
        acc = ConfusionMatrix(data.num_classes + 1)
        for image_id in data.ids("train"):
            with np.load(cam_artifact / f"{image_id}.npz") as npz:
                acc.update(data.read_mask(image_id), cams_to_labels(npz["cams"], npz["classes"], alpha=alpha))
        np.testing.assert_array_equal(metrics["confusion_matrix"], acc.matrix[:, :-1])
        assert metrics["miou"] < 1


def test_cam_size_mismatch_names_the_id(data, toy_data, tmp_path):
    ids = data.ids("val")
    for image_id in ids:
        mask = data.read_mask(image_id)
        classes = data.labels(image_id)
        shape = (mask.shape[0] + (image_id == ids[1]), mask.shape[1])
        np.savez(tmp_path / f"{image_id}.npz", cams=np.zeros((len(classes), *shape), np.float32), classes=classes)
    with pytest.raises(UserError, match=f"1 items differ in size .*{ids[1]}"):
        run(EvalConfig(data=toy_data, split="val", cams=tmp_path, curve=True, workers=0))
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --pred"),
    ({"pred": "p", "cams": "c"}, "exactly one of --pred"),
    ({"pred": "p", "curve": True}, "only with --cams"),
    ({"cams": "c", "curve": True, "alpha": 4.0}, "choose one"),
    ({"cams": "c", "threshold": 0.2, "alpha": 4.0}, "choose one"),
    ({"cams": "c", "alpha": -1.0}, "--alpha must be > 0"),
    ({"cams": "c", "thresholds": (0.5, 0.1, 0.01)}, "STOP >= START"),
    ({"cams": "c", "thresholds": (0.0, 0.5, 0.0)}, "STEP > 0"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(UserError, match=message):
        EvalConfig(data="d", split="train", **kwargs)


def test_sweep_range():
    assert sweep_range((0.0, 0.6, 0.01))[23] == 0.23
    assert sweep_range((0.0, 0.59, 0.01))[-1] == 0.59 and len(sweep_range((0, 0.59, 0.01))) == 60  # SEAM's sweep
    assert sweep_range((0.2, 0.2, 0.05)) == [0.2]
