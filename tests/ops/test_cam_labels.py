"""CAM -> labels: constant and power background, ties, the one-pass threshold sweep vs a loop, bad input."""
import numpy as np
import pytest

from wsss.ops.cam import (background_constant, background_power, cams_to_labels, foreground_scores,
                          threshold_sweep_confusions)
from wsss.ops.confusion import confusion_matrix

# Two rows (classes 4 and 11 -> labels 5 and 12) over a 1 x 4 image.
CAMS = np.array([[[0.9, 0.1, 0.2, 0.0]],
                 [[0.3, 0.4, 0.1, 0.0]]], np.float32)
CLASSES = np.array([4, 11])


def test_constant_background_by_hand():
    labels = cams_to_labels(CAMS, CLASSES, threshold=0.2)
    assert labels.dtype == np.uint8 and labels.shape == (1, 4)
    # pixel 2: best score 0.2 ties the background -> background; pixel 3: all zero -> background
    np.testing.assert_array_equal(labels, [[5, 12, 0, 0]])
    np.testing.assert_array_equal(cams_to_labels(CAMS, CLASSES, threshold=0.5), [[5, 0, 0, 0]])
    np.testing.assert_array_equal(cams_to_labels(CAMS, CLASSES, threshold=0.0), [[5, 12, 5, 0]])
    assert background_constant(CAMS, 0.3).shape == (1, 4)


def test_power_background_by_hand():
    # max per pixel: 0.9, 0.4, 0.2, 0.0 -> (1 - max)^2: 0.01, 0.36, 0.64, 1.0
    np.testing.assert_allclose(background_power(CAMS, 2.0), [[0.01, 0.36, 0.64, 1.0]], rtol=1e-5)
    np.testing.assert_array_equal(cams_to_labels(CAMS, CLASSES, alpha=2.0), [[5, 12, 0, 0]])
    # alpha 8: 0.8^8 = 0.168 < 0.2 -> pixel 2 becomes class 4 (label 5)
    np.testing.assert_array_equal(cams_to_labels(CAMS, CLASSES, alpha=8.0), [[5, 12, 5, 0]])
    # alpha 1: 1 - 0.4 = 0.6 > 0.4 -> pixel 1 is background
    np.testing.assert_array_equal(cams_to_labels(CAMS, CLASSES, alpha=1.0), [[5, 0, 0, 0]])


def test_no_classes_gives_all_background():
    empty = np.zeros((0, 3, 5), np.float32)
    np.testing.assert_array_equal(background_power(empty, 4.0), np.ones((3, 5)))
    np.testing.assert_array_equal(cams_to_labels(empty, np.zeros(0, np.int64), threshold=0.2), 0)
    np.testing.assert_array_equal(cams_to_labels(empty, np.zeros(0, np.int64), alpha=4.0), 0)


def test_foreground_scores():
    score, label = foreground_scores(CAMS, CLASSES)
    np.testing.assert_allclose(score, [[0.9, 0.4, 0.2, 0.0]])
    np.testing.assert_array_equal(label, [[5, 12, 5, 5]])  # ties between rows go to the first row


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0.2, "alpha": 4.0}, "exactly one"),
    ({}, "exactly one"),
    ({"alpha": 0.0}, "alpha must be > 0"),
    ({"threshold": float("nan")}, "finite"),
])
def test_bad_background(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cams_to_labels(CAMS, CLASSES, **kwargs)


@pytest.mark.parametrize("cams, classes, message", [
    (CAMS[0], CLASSES, r"\(K, H, W\)"),
    (CAMS.astype(np.int64), CLASSES, "float"),
    (CAMS, CLASSES[:1], "classes must be integer"),
    (CAMS, np.array([4.0, 11.0]), "classes must be integer"),
    (CAMS, np.array([-1, 3]), "0-based"),
    (CAMS, np.array([3, 254]), "0-based"),
])
def test_bad_cams(cams, classes, message):
    with pytest.raises(ValueError, match=message):
        cams_to_labels(cams, classes, threshold=0.2)


def plain_sweep(cams, classes, gt, thresholds, n):
    """One label map and one confusion matrix per threshold."""
    return np.stack([confusion_matrix(gt, cams_to_labels(cams, classes, threshold=float(t)), n)[:, :n]
                     for t in thresholds])


@pytest.mark.parametrize("k", [0, 1, 3])
def test_sweep_agrees_with_a_loop_over_thresholds(k):
    rng = np.random.default_rng(k)
    n = 8
    cams = np.round(rng.random((k, 9, 11)), 2).astype(np.float32)  # rounded: many ties with the thresholds
    classes = rng.choice(n - 1, k, replace=False)
    gt = rng.integers(0, n, (9, 11)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.2] = 255
    thresholds = rng.permutation(np.round(np.arange(0.0, 1.0, 0.05), 2))  # any order, result in that order
    fast = threshold_sweep_confusions(cams, classes, gt, thresholds, n)
    assert fast.shape == (len(thresholds), n, n) and fast.dtype == np.int64
    np.testing.assert_array_equal(fast, plain_sweep(cams, classes, gt, thresholds, n))


def test_sweep_by_hand():
    # 1 x 4 image, gt: class 5, class 12, background, ignore.
    gt = np.array([[5, 12, 0, 255]], np.uint8)
    out = threshold_sweep_confusions(CAMS, CLASSES, gt, [0.1, 0.3, 0.95], 13)
    # t=0.1: labels 5, 12, 5 -> gt 0 predicted 5; t=0.3: 5, 12, 0 -> all right; t=0.95: all background
    assert out[0, 0, 5] == 1 and out[0, 5, 5] == 1 and out[0, 12, 12] == 1
    assert np.trace(out[1]) == 3 and out[1].sum() == 3
    assert out[2, 5, 0] == 1 and out[2, 12, 0] == 1 and out[2, 0, 0] == 1


@pytest.mark.parametrize("gt, thresholds, n, message", [
    (np.zeros((2, 4), np.uint8), [0.2], 13, "shape"),
    (np.zeros((1, 4), np.uint8), [], 13, "non-empty"),
    (np.zeros((1, 4), np.uint8), [float("inf")], 13, "finite"),
    (np.zeros((1, 4), np.uint8), [0.2], 6, "do not fit"),
    (np.full((1, 4), 20, np.uint8), [0.2], 13, "gt holds label values"),
])
def test_sweep_bad_input(gt, thresholds, n, message):
    with pytest.raises(ValueError, match=message):
        threshold_sweep_confusions(CAMS, CLASSES, gt, thresholds, n)
