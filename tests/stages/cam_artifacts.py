"""Test helpers for the PSA second half: a small ``cam`` artifact for the toy ids and a tiny AffinityNet file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wsss.artifacts import OutputDir, input_record
from wsss.data.prepared import open_dataset
from wsss.artifacts.items import write_cam as save_cam_npz


def toy_cams(data, image_id: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random smooth CAMs (K, H, W) in [0, 1] (max 1 per row) for the image's true classes."""
    rng = np.random.default_rng(seed)
    classes = np.asarray(data.labels(image_id), np.int64)
    h, w = data.read_image(image_id).shape[:2]
    yy, xx = np.mgrid[:h, :w]
    cams = np.zeros((len(classes), h, w), np.float32)
    for k in range(len(classes)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 20)
        cams[k] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        cams[k] /= cams[k].max()
    return cams, classes


def write_cam_artifact(data_root: Path, split: str, out: Path, seed: int = 0, ids=None) -> Path:
    """A complete ``cam`` artifact for ``ids`` (default: every id of ``split``)."""
    data = open_dataset(data_root)
    ids = data.ids(split) if ids is None else ids
    folder = OutputDir.open(out, kind="cam", stage="test_cams", config={"seed": seed},
                            inputs={"data": input_record(data_root)})
    for n, image_id in enumerate(ids):
        cams, classes = toy_cams(data, image_id, seed + n)
        folder.write_item(image_id, ".npz", lambda p, c=cams, k=classes: save_cam_npz(p, c, k))
    folder.complete(num_items=len(ids), split=split)
    return Path(out)


def write_tiny_affinity_net(path: Path, flat: bool = False, seed: int = 0) -> Path:
    """A tiny-backbone AffinityNet as our checkpoint, or (``flat``) as an original-layout state_dict."""
    from wsss.engine.checkpoint import save_checkpoint
    from wsss.models.registry import build_model

    torch.manual_seed(seed)
    network = build_model("aff", backbone="tiny")
    if flat:
        torch.save(network.export_original_state_dict(), path)
    else:
        save_checkpoint(path, model_name="aff", model_kwargs={"backbone": "tiny"}, state_dict=network.state_dict(),
                        config={}, epoch=0, iteration=0, with_rng=False)
    return Path(path)
