"""CAM fusion (PSA infer_cls) on hand-worked examples, and average precision."""
import numpy as np
import pytest
import torch

from wsss.ops.classification import average_precision, mean_average_precision
from wsss.ops.multiscale import fuse_cams, normalize_cams, scaled_images


def test_fusion_hand_worked():
    # Class 0 map [1, 3] upsampled (bilinear, align_corners=False) to width 4 is [1, 1.5, 2.5, 3];
    # a flipped 1x1 map of 2 adds 2 everywhere; class 1 is absent from the label and is zeroed.
    m1 = torch.tensor([[[1.0, 3.0]], [[5.0, 5.0]]])
    m2 = torch.tensor([[[2.0]], [[7.0]]])
    fused = fuse_cams([m1, m2], [False, True], (1, 4), torch.tensor([1.0, 0.0]))
    assert fused[0, 0].tolist() == pytest.approx([3.0, 3.5, 4.5, 5.0])
    assert fused[1].abs().sum() == 0
    norm = normalize_cams(fused)
    assert norm[0, 0].tolist() == pytest.approx([3 / (5 + 1e-5), 3.5 / (5 + 1e-5), 4.5 / (5 + 1e-5), 5 / (5 + 1e-5)])


def test_flip_is_undone():
    m = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    fused = fuse_cams([m], [True], (1, 4), torch.ones(1))
    assert fused[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_fusion_bad_input():
    with pytest.raises(ValueError, match="flip flag"):
        fuse_cams([torch.zeros(2, 1, 1)], [], (2, 2), torch.ones(2))
    with pytest.raises(ValueError, match=r"\(C=3"):
        fuse_cams([torch.zeros(2, 1, 1)], [False], (2, 2), torch.ones(3))


def test_scaled_images_sizes():
    img = np.zeros((375, 500, 3), np.uint8)
    sizes = [s.shape[:2] for s in scaled_images(img, (1, 0.5, 1.5, 2))]
    assert sizes == [(375, 500), (188, 250), (562, 750), (750, 1000)]  # round(375 * 0.5) = 188, round half even
    with pytest.raises(ValueError):
        scaled_images(img, (0,))


def test_average_precision_hand_worked():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    ap = average_precision(scores, targets)
    # class 0 ranking: pos, neg, pos, neg -> precisions at hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(ap[1])
    assert mean_average_precision(scores, targets) == pytest.approx(ap[0])
    with pytest.raises(ValueError):
        average_precision(scores, targets[:, :1])
