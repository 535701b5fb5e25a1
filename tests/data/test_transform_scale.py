"""The random rescale step of the joint transform (IRN's ``random_scale``): both sides times one factor."""
import numpy as np
import pytest
import torch

from wsss.data.transforms import JointTransform, JointTransformConfig


def test_fixed_factor_by_hand():
    image = np.zeros((30, 41, 3), np.uint8)
    mask = (np.arange(30 * 41).reshape(30, 41) % 3).astype(np.uint8)
    out, masks = JointTransform(JointTransformConfig(scale_range=(0.5, 0.5)))(image, {"m": mask})
    assert out.shape == (3, 15, 20) and masks["m"].shape == (15, 20)  # round(30 / 2), round(41 / 2) = 20
    assert set(masks["m"].unique().tolist()) <= {0, 1, 2}  # nearest: no new values


def test_factors_are_uniform_in_the_range():
    torch.manual_seed(0)
    t = JointTransform(JointTransformConfig(scale_range=(0.5, 1.5)))
    sides = [t(np.zeros((100, 100, 3), np.uint8))[0].shape[-1] for _ in range(200)]
    assert 50 <= min(sides) < 60 and 140 < max(sides) <= 150 and 90 < np.mean(sides) < 110


@pytest.mark.parametrize("settings, message", [
    ({"scale_range": (0.0, 1.0)}, "0 < min <= max"), ({"scale_range": (1.5, 0.5)}, "0 < min <= max"),
    ({"scale_range": (0.5, 1.5), "long_side_range": (10, 20)}, "alternative resizes"),
])
def test_bad_scale_ranges(settings, message):
    with pytest.raises(ValueError, match=message):
        JointTransformConfig(**settings)
