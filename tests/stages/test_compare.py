"""``wsss compare``'s settings columns (init, MS/flip, CRF) on hand-made manifests: read along the inputs chain
metrics -> seg infer artifact -> seg train run, ``?`` where a manifest is missing or rewritten since it was
recorded, empty for rows that are not final segmentation."""
from __future__ import annotations

import json

from click.testing import CliRunner

from wsss.artifacts.manifest import manifest_digest
from wsss.cli.main import cli
from wsss.stages import compare

DLP = [1.0, 3.0, 67.0, 3.0, 4.0, 10.0]


def _write(folder, obj, name="manifest.json"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj))
    return folder


def _record(folder, file=None):
    return {"path": str(folder / file if file else folder), "manifest_sha256": manifest_digest(folder)}


def _seg_train(run, init="/x/ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"):
    inputs = {"data": {"path": "/d"}, **({"init_weights": {"path": init}} if init else {})}
    return _write(run / "seg_train", {"kind": "checkpoint", "stage": "seg_train", "config": {"init_weights": init},
                                      "inputs": inputs})


def _seg_infer(run, name, weights, **config):
    config = {"scales": [1.0], "flip": False, "fuse": "max", "short_side": None, "crf": False, "crf_params": DLP,
              "crf_image": "deeplab_pytorch", **config}
    return _write(run / name, {"kind": "label", "stage": "seg_infer", "config": config,
                               "inputs": {"data": {"path": "/d"}, "weights": weights}})


def _eval(run, name, pred, key="pred", miou=0.5):
    return _write(run / name, {"kind": "metrics", "split": "val", "miou": miou, "input_kind": "label",
                               "inputs": {"data": {"path": "/d", "manifest_sha256": "abc"}, key: _record(pred)}},
                  "metrics.json")


def _rows(run):
    return {r.evaluated: r for r in compare.run(compare.CompareConfig(runs=(run,)))["val"]}


def test_settings_of_seg_rows(tmp_path):
    run = tmp_path / "run"
    train = _seg_train(run)
    weights = _record(train, "final.pt")
    _eval(run, "eval_raw", _seg_infer(run, "infer_raw", weights))
    _eval(run, "eval_seam", _seg_infer(run, "infer_seam", weights, scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75],
                                       flip=True, fuse="mean", crf=True, crf_params=[3, 3, 32, 13, 10, 1],
                                       crf_image="rgb"))
    _eval(run, "eval_tv", _seg_infer(run, "infer_tv", weights, short_side=520))
    scratch = _seg_train(tmp_path / "other", init=None)
    _eval(run, "eval_scratch", _seg_infer(run, "infer_scratch", _record(scratch, "final.pt"), flip=True))
    released = tmp_path / "released" / "deeplabv2_resnet101_msc-vocaug-20000.pth"
    _eval(run, "eval_released", _seg_infer(run, "infer_released", {"path": str(released)}))
    _eval(run, "eval_cam", _write(run / "cam", {"kind": "cam", "stage": "cam_infer", "config": {"scales": [1.0]}}),
          key="cams")
    rows = _rows(run)
    settings = {name: (r.init, r.ms_flip, r.crf) for name, r in rows.items()}
    assert settings == {
        "eval_raw": ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "1", "no"),
        "eval_seam": ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "0.5,0.75,1,1.25,1.5,1.75 + flip, mean",
                      "3/3+32/13/10 x1 rgb"),
        "eval_tv": ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "short 520: 1", "no"),
        "eval_scratch": ("none", "1 + flip, max", "no"),
        "eval_released": ("? (deeplabv2_resnet101_msc-vocaug-20000.pth)", "1", "no"),
        "eval_cam": ("", "", ""),
    }
    assert rows["eval_raw"].stage == "seg_infer" and rows["eval_cam"].stage == "cam_infer"


def test_rewritten_manifests_are_question_marks(tmp_path):
    """An artifact or run rewritten after it was recorded: its settings may not be those of the number."""
    run = tmp_path / "run"
    train = _seg_train(run)
    _eval(run, "eval_a", _seg_infer(run, "infer_a", _record(train, "final.pt"), crf=True))
    _eval(run, "eval_b", _seg_infer(run, "infer_b", _record(train, "final.pt")))
    assert _rows(run)["eval_a"].crf == "1/3+67/3/4 x10 deeplab_pytorch"
    _seg_infer(run, "infer_a", _record(train, "final.pt"), crf=False)  # rerun after the evaluation
    rows = _rows(run)
    assert (rows["eval_a"].init, rows["eval_a"].ms_flip, rows["eval_a"].crf) == ("?", "?", "?")
    assert (rows["eval_b"].init, rows["eval_b"].crf) == ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "no")
    _seg_train(run, init="/x/deeplabv1_resnet101-coco.pth")  # the run retrained after infer_b read it
    assert _rows(run)["eval_b"].init == "?"
    (run / "infer_b" / "manifest.json").write_text("{not json")
    assert (_rows(run)["eval_b"].crf, _rows(run)["eval_b"].stage) == ("", "label")


def test_columns_in_text_csv_and_json(tmp_path):
    run = tmp_path / "run"
    train = _seg_train(run)
    _eval(run, "eval_crf", _seg_infer(run, "infer_crf", _record(train, "final.pt"), crf=True, flip=True))
    text = CliRunner().invoke(cli, ["compare", str(run)])
    assert text.exit_code == 0, text.output
    header, _, row = text.output.splitlines()
    assert header.split()[-3:] == ["init", "MS/flip", "CRF"]
    assert row.endswith("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth  1 + flip, max  1/3+67/3/4 x10 deeplab_pytorch")
    csv_lines = CliRunner().invoke(cli, ["compare", str(run), "--format", "csv"]).output.splitlines()
    assert csv_lines[0].endswith(",background,init,MS/flip,CRF")
    assert csv_lines[1].endswith(",ilsvrc-cls_rna-a1_cls1000_ep-0001.pth,\"1 + flip, max\","
                                 "1/3+67/3/4 x10 deeplab_pytorch")
    as_json = json.loads(CliRunner().invoke(cli, ["compare", str(run), "--format", "json"]).output)[0]
    assert (as_json["init"], as_json["ms_flip"], as_json["crf"]) == ("ilsvrc-cls_rna-a1_cls1000_ep-0001.pth",
                                                                     "1 + flip, max",
                                                                     "1/3+67/3/4 x10 deeplab_pytorch")
