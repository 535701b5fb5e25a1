"""Joint transforms: image and masks stay aligned; crop/pad arithmetic; presets; bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.data.palette import IGNORE_INDEX
from wsss.data.transforms import JointTransform, JointTransformConfig, _crop_offsets
from wsss.models.normalization import normalization_for


def _coded_sample(h=40, w=60):
    """An image whose red channel encodes a label map in blocks (value = 40 * label), and that label map."""
    mask = np.zeros((h, w), np.uint8)
    mask[5:25, 8:30] = 1
    mask[20:38, 35:55] = 2
    mask[:, 58:] = 3
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = mask * 40
    image[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 4  # makes a flip visible
    return image, mask


@pytest.mark.parametrize("config", [
    JointTransformConfig(flip=True, crop=32),
    JointTransformConfig(flip=True, crop=80),
    JointTransformConfig(long_side_range=(30, 90), flip=True, crop=48),
    JointTransformConfig(resized_crop=36, resized_crop_scale=(0.5, 1.0), flip=True),
])
def test_mask_stays_aligned_with_the_image(config):
    torch.manual_seed(0)
    image, mask = _coded_sample()
    t = JointTransform(config)  # no normalisation, no jitter: the red channel still encodes the label
    for _ in range(10):
        img, masks = t(image, {"mask": mask, "copy": mask})
        m = masks["mask"]
        assert img.dtype == torch.float32 and img.shape[0] == 3 and m.dtype == torch.int64
        assert img.shape[1:] == m.shape
        torch.testing.assert_close(masks["copy"], m)
        # away from label edges (bicubic resampling blurs the image there), red / 40 is the label
        decoded = torch.round(img[0] / 40).to(torch.int64)
        pool = torch.nn.functional.max_pool2d
        edges = pool(m[None, None].float(), 5, 1, 2)[0, 0] != -pool(-m[None, None].float(), 5, 1, 2)[0, 0]
        keep = (m != IGNORE_INDEX) & ~edges
        assert keep.any()
        assert (decoded[keep] == m[keep]).float().mean() > 0.99


def test_flip_flips_image_and_mask_together():
    image, mask = _coded_sample()
    t = JointTransform(JointTransformConfig(flip=True))
    seen = set()
    torch.manual_seed(1)
    for _ in range(20):
        img, masks = t(image, {"mask": mask})
        flipped = bool(img[1, 0, 0] > img[1, 0, -1])
        seen.add(flipped)
        expected = mask[:, ::-1] if flipped else mask
        np.testing.assert_array_equal(masks["mask"].numpy(), expected)
    assert seen == {True, False}


def test_crop_offsets_by_hand():
    torch.manual_seed(0)
    for _ in range(20):
        src, dst, n = _crop_offsets(10, 4)  # longer side: a window
        assert dst == 0 and n == 4 and 0 <= src <= 6
        src, dst, n = _crop_offsets(3, 5)  # shorter side: pasted somewhere
        assert src == 0 and n == 3 and 0 <= dst <= 2
    assert _crop_offsets(5, 5)[1:] == (0, 5)


def test_padding_is_zero_after_normalisation_and_255_in_masks():
    norm = normalization_for("wideresnet38")
    image = np.full((10, 12, 3), 200, np.uint8)
    mask = np.ones((10, 12), np.uint8)
    img, masks = JointTransform(JointTransformConfig(crop=20), norm)(image, {"mask": mask})
    m = masks["mask"]
    assert img.shape == (3, 20, 20) and m.shape == (20, 20)
    assert (m == 1).sum() == 120 and (m == IGNORE_INDEX).sum() == 400 - 120
    pad = m == IGNORE_INDEX
    assert (img[:, pad] == 0).all()
    expected = torch.as_tensor(norm.apply(image[:1, :1]))[:, 0, 0]
    torch.testing.assert_close(img[:, ~pad], expected[:, None].expand(3, 120))


def test_black_padding_is_raw_black_normalised():
    norm = normalization_for("vgg16")
    image = np.full((10, 12, 3), 200, np.uint8)
    img, masks = JointTransform(JointTransformConfig(crop=20, crop_pad="black"), norm)(image, {"m": np.zeros((10, 12), np.uint8)})
    pad = masks["m"] == IGNORE_INDEX
    black = torch.tensor([-104.008, -116.669, -122.675])
    torch.testing.assert_close(img[:, pad], black[:, None].expand(3, int(pad.sum())))


def test_long_side_resize_by_hand():
    t = JointTransform(JointTransformConfig(long_side_range=(30, 30)))
    img, masks = t(np.zeros((20, 40, 3), np.uint8), {"m": np.zeros((20, 40), np.uint8)})
    assert img.shape == (3, 15, 30) and masks["m"].shape == (15, 30)
    img, _ = t(np.zeros((41, 20, 3), np.uint8))
    assert img.shape == (3, 30, 15)  # round(20 * 30 / 41) = 15
    img, _ = t(np.zeros((25, 25, 3), np.uint8))
    assert img.shape == (3, 30, 30)


def test_resize_keeps_mask_values_nearest():
    image, mask = _coded_sample()
    mask = mask.copy()
    mask[0, 0] = IGNORE_INDEX
    torch.manual_seed(0)
    _, masks = JointTransform(JointTransformConfig(long_side_range=(100, 140)))(image, {"m": mask})
    assert set(masks["m"].unique().tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


def test_presets_give_the_published_sizes():
    norm = normalization_for("wideresnet38")
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    for config, size in ((JointTransformConfig.psa_cls(), 448), (JointTransformConfig.seam(), 448),
                         (JointTransformConfig.psa_aff(), 448), (JointTransformConfig.single_stage(), 321)):
        img, masks = JointTransform(config, norm)(image, {"m": np.zeros((300, 400), np.uint8)})
        assert img.shape == (3, size, size) and masks["m"].shape == (size, size)
    assert JointTransformConfig.psa_cls().long_side_range == (256, 512)
    assert JointTransformConfig.seam().long_side_range == (448, 768)


def test_jitter_changes_colours_only():
    image, mask = _coded_sample()
    torch.manual_seed(0)
    img, masks = JointTransform(JointTransformConfig(jitter=(0.3, 0.3, 0.3, 0.1)))(image, {"m": mask})
    assert img.shape == (3, 40, 60)
    assert not torch.equal(img, torch.from_numpy(image).permute(2, 0, 1).float())
    np.testing.assert_array_equal(masks["m"].numpy(), mask)


def test_bad_inputs():
    t = JointTransform()
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        t(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="mask 'm' is"):
        t(np.zeros((4, 4, 3), np.uint8), {"m": np.zeros((4, 5), np.uint8)})
    with pytest.raises(ValueError):
        JointTransformConfig(crop=0)
    with pytest.raises(ValueError):
        JointTransformConfig(long_side_range=(10, 5))
    with pytest.raises(ValueError):
        JointTransformConfig(long_side_range=(10, 20), resized_crop=8)
    with pytest.raises(ValueError):
        JointTransformConfig(crop_pad="grey")
