"""Input conventions: hand-worked values, BGR order, round trip, tensor/array agreement, bad input."""
import numpy as np
import pytest
import torch

from wsss.errors import UserError
from wsss.models import list_models
from wsss.models.normalization import Normalization, normalization_for


def test_imagenet_rgb_hand_worked():
    img = np.array([[[255, 0, 128]]], np.uint8)  # one pixel, R=255, G=0, B=128
    out = normalization_for("wideresnet38").apply(img)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_vgg16_is_bgr_with_caffe_mean():
    img = np.array([[[10, 20, 30]]], np.uint8)  # R=10, G=20, B=30
    out = normalization_for("vgg16").apply(img)
    np.testing.assert_allclose(out[:, 0, 0], [30 - 104.008, 20 - 116.669, 10 - 122.675], rtol=1e-6)


@pytest.mark.parametrize("backbone", ["wideresnet38", "vgg16", "tiny"])
def test_round_trip_and_tensor_agreement(backbone):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    norm = normalization_for(backbone)
    from_array = norm.apply(img)
    from_tensor = norm.apply(torch.from_numpy(img))
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.shape == (3, 5, 7)
    np.testing.assert_allclose(from_tensor.numpy(), from_array, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(norm.invert(from_array), img)
    np.testing.assert_array_equal(norm.invert(from_tensor[None])[0], img)


def test_float_input_in_0_255_equals_uint8():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    norm = normalization_for("resnet50")
    np.testing.assert_array_equal(norm.apply(img.astype(np.float32)), norm.apply(img))


def test_every_backbone_has_a_normalization():
    for name in list_models(kind="backbone"):
        assert isinstance(normalization_for(name), Normalization)


def test_bad_input():
    norm = normalization_for("wideresnet38")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        norm.apply(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="invert"):
        norm.invert(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(UserError, match="unknown backbone 'resnet18'"):
        normalization_for("resnet18")
    with pytest.raises(ValueError, match="std"):
        Normalization(mean=(0, 0, 0), std=(1, 0, 1), bgr=False)
