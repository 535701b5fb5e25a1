"""``aff train`` on the toy data: two iterations from la/ha label artifacts, and its input checks."""
from __future__ import annotations

import numpy as np
import pytest

from wsss.artifacts import OutputDir
from wsss.data.prepared import open_dataset
from wsss.data.palette import write_label_png
from wsss.engine.checkpoint import load_checkpoint
from wsss.errors import UserError
from wsss.stages import aff_train


def _label_artifact(folder, data, ids, erode_foreground: bool):
    """A label artifact from the ground truth: la-like (foreground shrunk to ignore) or ha-like."""
    out = OutputDir.open(folder, kind="label", stage="crf_labels", config={"fake": erode_foreground})
    for image_id in ids:
        mask = data.read_mask(image_id).copy()
        if erode_foreground:
            mask[(mask > 0) & (mask < 255) & (np.arange(mask.shape[1])[None] % 3 == 0)] = 0
        out.write_item(image_id, ".png", lambda p, m=mask: write_label_png(p, m))
    out.complete(num_items=len(ids), split="train")
    return folder


@pytest.fixture(scope="module")
def la_ha(toy_data, tmp_path_factory):
    data = open_dataset(toy_data)
    ids = data.ids("train")
    root = tmp_path_factory.mktemp("aff")
    return (_label_artifact(root / "la", data, ids, True), _label_artifact(root / "ha", data, ids, False))


def test_aff_train_two_iterations(toy_data, la_ha, tmp_path):
    la, ha = la_ha
    cfg = aff_train.AffTrainConfig(data=toy_data, split="train", la=la, ha=ha, backbone="tiny", out=tmp_path / "r",
                                   batch_size=2, crop=80, max_iters=2, workers=0, device="cpu", log_every=1)
    m = aff_train.run(cfg)
    assert m.kind == "checkpoint" and m.extra["iterations"] == 2
    ckpt = load_checkpoint(tmp_path / "r" / "final.pt")
    assert ckpt["model"] == "aff" and any(k.startswith("f9") for k in ckpt["state_dict"])
    import json
    lines = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "bg", "fg", "neg", "n_bg_pos", "n_fg_pos", "n_neg"} <= set(lines[0])
    assert all(np.isfinite(line["loss"]) for line in lines) and lines[0]["n_neg"] > 0


def test_aff_train_input_errors(toy_data, la_ha, tmp_path):
    la, ha = la_ha
    with pytest.raises(UserError, match="multiple of 8"):
        aff_train.run(aff_train.AffTrainConfig(data=toy_data, split="train", la=la, ha=ha, backbone="tiny",
                                               out=tmp_path / "a", crop=50))
    with pytest.raises(UserError, match="--la .*cam|expected a 'label'|no manifest"):
        aff_train.run(aff_train.AffTrainConfig(data=toy_data, split="train", la=tmp_path, ha=ha, backbone="tiny",
                                               out=tmp_path / "b"))
    with pytest.raises(UserError, match="none of the 8 ids of split 'val' has a label PNG"):
        aff_train.run(aff_train.AffTrainConfig(data=toy_data, split="val", la=la, ha=ha, backbone="tiny",
                                               out=tmp_path / "c"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
