"""The joint-transform steps of the retraining recipes: scale choices, short side, bilinear, bottom/right padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.data.transforms import DEEPLAB_SCALES, JointTransform, JointTransformConfig


def _sample(h=30, w=40):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return image, {"mask": np.full((h, w), 7, np.uint8)}


def test_bottom_right_padding_keeps_the_image_at_the_origin():
    image, masks = _sample()
    t = JointTransform(JointTransformConfig(scale_choices=(1.0,), crop=48, pad_side="bottom_right"))
    out, ms = t(image, masks)
    assert out.shape == (3, 48, 48) and ms["mask"].shape == (48, 48)
    assert torch.equal(out[:, :30, :40], torch.from_numpy(image).permute(2, 0, 1).float())
    assert (ms["mask"][:30, :40] == 7).all() and (ms["mask"][30:] == 255).all() and (ms["mask"][:, 40:] == 255).all()
    assert (out[:, 30:] == 0).all()


def test_scale_choices_draw_one_factor_of_the_list():
    image, masks = _sample()
    t = JointTransform(JointTransformConfig(scale_choices=(0.5, 1.5), interpolation="bilinear"))
    shapes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        shapes.add(tuple(t(image, masks)[1]["mask"].shape))
    assert shapes == {(15, 20), (45, 60)}  # (int(30 s), int(40 s))


def test_short_side_range_sets_the_short_side():
    image, masks = _sample()
    out, ms = JointTransform(JointTransformConfig(short_side_range=(60, 60)))(image, masks)
    assert out.shape[-2:] == (60, 80) and ms["mask"].shape == (60, 80) and set(ms["mask"].unique().tolist()) == {7}


def test_deeplab_preset_and_bad_settings():
    cfg = JointTransformConfig.deeplab()
    assert (cfg.scale_choices, cfg.crop, cfg.pad_side, cfg.interpolation, cfg.flip) == (
        DEEPLAB_SCALES, 321, "bottom_right", "bilinear", True)
    with pytest.raises(ValueError, match="alternative resizes"):
        JointTransformConfig(scale_choices=(1.0,), long_side_range=(10, 20))
    with pytest.raises(ValueError, match="alternative resizes"):
        JointTransformConfig(scale_choices=(1.0,), short_side_range=(10, 20))
    for bad, match in (({"scale_choices": (0.0,)}, "factors > 0"), ({"short_side_range": (20, 10)}, "short_side"),
                       ({"interpolation": "area"}, "interpolation"), ({"pad_side": "left"}, "pad_side")):
        with pytest.raises(ValueError, match=match):
            JointTransformConfig(**bad)
