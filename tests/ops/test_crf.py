"""Dense CRF through pydensecrf, PSA's alpha background and CRF labels from CAMs."""
import numpy as np
import pytest
import torch

import pydensecrf.densecrf as dcrf
from wsss.ops.crf import alpha_background_scores, crf_labels_from_cams, dense_crf, labels_from_scores


def two_colour_image(height=24, width=32):
    """Left half red, right half blue."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 30, 30)
    image[:, width // 2:] = (30, 30, 200)
    return image


def noisy_scores(height=24, width=32, seed=0):
    """2-label scores favouring label 0 on the left and 1 on the right, with 20% of pixels flipped."""
    rng = np.random.default_rng(seed)
    first = np.where(np.arange(width) < width // 2, 0.7, 0.3)[None].repeat(height, 0)
    flip = rng.random((height, width)) < 0.2
    first = np.where(flip, 1 - first, first).astype(np.float32)
    return np.stack([first, 1 - first])


class RecordingCRF:
    """Stands in for pydensecrf's DenseCRF2D and records what it is given."""

    calls: list = []

    def __init__(self, width, height, labels):
        RecordingCRF.calls = [("init", width, height, labels)]

    def setUnaryEnergy(self, unary):
        RecordingCRF.calls.append(("unary", unary.copy(), unary.flags["C_CONTIGUOUS"], unary.dtype))

    def addPairwiseGaussian(self, **kw):
        RecordingCRF.calls.append(("gaussian", kw))

    def addPairwiseBilateral(self, **kw):
        RecordingCRF.calls.append(("bilateral", kw))

    def inference(self, iterations):
        RecordingCRF.calls.append(("inference", iterations))
        _, width, height, labels = RecordingCRF.calls[0]
        return np.full((labels, width * height), 1.0 / labels, np.float32)


def test_parameters_reach_pydensecrf(monkeypatch):
    monkeypatch.setattr(dcrf, "DenseCRF2D", RecordingCRF)
    image = two_colour_image(6, 8)
    scores = np.zeros((3, 6, 8), np.float32)
    scores[1] = 0.5
    scores[2] = 1.0
    out = dense_crf(image, scores, gaussian_sxy=2, gaussian_compat=4, bilateral_sxy=50, bilateral_srgb=7,
                    bilateral_compat=9, iterations=3)
    calls = dict((c[0], c[1:]) for c in RecordingCRF.calls)
    assert calls["init"] == (8, 6, 3)                                   # (width, height, labels)
    unary, contiguous, dtype = calls["unary"]
    assert contiguous and dtype == np.float32 and unary.shape == (3, 48)
    assert np.allclose(unary[0], -np.log(1e-5)) and np.allclose(unary[1], -np.log(0.5)) and np.allclose(unary[2], 0)
    assert calls["gaussian"][0] == {"sxy": 2.0, "compat": 4.0}
    bilateral = calls["bilateral"][0]
    assert {k: bilateral[k] for k in ("sxy", "srgb", "compat")} == {"sxy": 50.0, "srgb": 7.0, "compat": 9.0}
    assert np.array_equal(bilateral["rgbim"], image) and bilateral["rgbim"].flags["C_CONTIGUOUS"]
    assert calls["inference"] == (3,)
    assert out.shape == (3, 6, 8) and out.dtype == np.float32


def test_reference_defaults_reach_pydensecrf(monkeypatch):
    monkeypatch.setattr(dcrf, "DenseCRF2D", RecordingCRF)
    dense_crf(two_colour_image(4, 4), np.full((2, 4, 4), 0.5, np.float32))
    calls = dict((c[0], c[1:]) for c in RecordingCRF.calls)
    assert calls["gaussian"][0] == {"sxy": 3.0, "compat": 3.0}
    assert {k: calls["bilateral"][0][k] for k in ("sxy", "srgb", "compat")} == {"sxy": 80.0, "srgb": 13.0,
                                                                                "compat": 10.0}
    assert calls["inference"] == (10,)


def test_without_pairwise_terms_the_marginals_are_the_normalised_scores():
    scores = noisy_scores()
    scores[0, 0, 0], scores[1, 0, 0] = 0.0, 1.0                          # clipped to 1e-5 before -log
    expected = np.clip(scores, 1e-5, 1) / np.clip(scores, 1e-5, 1).sum(0)
    no_pairs = dense_crf(two_colour_image(), scores, gaussian_compat=0, bilateral_compat=0)
    no_steps = dense_crf(two_colour_image(), scores, iterations=0)
    assert np.allclose(no_pairs, expected, atol=1e-5) and np.allclose(no_steps, expected, atol=1e-5)


def test_compat_values_change_the_result():
    """With the reference weights the CRF cleans the 20% flipped pixels along the colour edge; without, not."""
    scores = noisy_scores()
    truth = np.where(np.arange(32) < 16, 0, 1)[None].repeat(24, 0)
    smooth = dense_crf(two_colour_image(), scores).argmax(0)
    raw = dense_crf(two_colour_image(), scores, gaussian_compat=0, bilateral_compat=0).argmax(0)
    assert (smooth == truth).mean() == 1.0
    assert (raw == truth).mean() < 0.9
    marginals = dense_crf(two_colour_image(), scores)
    assert np.allclose(marginals.sum(0), 1, atol=1e-5)
    weak = dense_crf(two_colour_image(), scores, bilateral_compat=1, gaussian_compat=0.1)
    assert not np.allclose(weak, marginals, atol=1e-3)


def test_alpha_background_scores():
    cams = np.array([[[0.9, 0.3, 0.1]], [[0.2, 0.6, 0.05]]], np.float32)    # (2, 1, 3)
    stack = alpha_background_scores(cams, alpha=2)
    assert stack.shape == (3, 1, 3) and stack.dtype == np.float32
    assert np.allclose(stack[0, 0], [0.01, 0.16, 0.81])
    assert np.array_equal(stack[1:], cams)
    assert np.array_equal(alpha_background_scores(np.zeros((0, 2, 2), np.float32), 4), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        alpha_background_scores(cams, 0)


def test_labels_from_scores_maps_rows_to_dataset_labels():
    scores = np.array([[[0.5, 0.1, 0.2]], [[0.2, 0.8, 0.2]], [[0.1, 0.1, 0.7]]])
    assert labels_from_scores(scores, np.array([4, 11])).tolist() == [[0, 5, 12]]
    assert labels_from_scores(torch.from_numpy(scores), [4, 11]).tolist() == [[0, 5, 12]]
    with pytest.raises(ValueError, match=r"expected \(2, H, W\) for 1 classes"):
        labels_from_scores(scores, [4])


def test_crf_labels_from_cams_alpha_decides_background():
    """Without CRF steps the labels are the argmax of [(1 - max)^alpha, cams]: a weak CAM (0.3) is background
    at alpha 1 (0.7 > 0.3) and foreground at alpha 4 (0.24 < 0.3)."""
    image = np.full((1, 3, 3), 128, np.uint8)
    cams = np.array([[[0.9, 0.3, 0.1]], [[0.2, 0.25, 0.05]]], np.float32)
    no_steps = {"iterations": 0}
    assert crf_labels_from_cams(image, cams, [4, 11], alpha=1, crf_params=no_steps).tolist() == [[5, 0, 0]]
    assert crf_labels_from_cams(image, cams, [4, 11], alpha=4, crf_params=no_steps).tolist() == [[5, 5, 0]]


def test_crf_labels_from_cams_with_the_crf():
    image = two_colour_image()
    cams = noisy_scores()[1:]                                  # one class, strong on the right half
    labels = crf_labels_from_cams(image, cams, [6], alpha=1)
    assert labels.dtype == np.uint8 and labels.shape == (24, 32)
    assert set(np.unique(labels).tolist()) == {0, 7}
    assert (labels[:, 16:] == 7).all() and (labels[:, :16] == 0).all()


def test_bad_inputs():
    image, scores = two_colour_image(), noisy_scores()
    with pytest.raises(ValueError, match="scores are 24x31 but the image is 24x32"):
        dense_crf(image, scores[:, :, :31])
    with pytest.raises(ValueError, match=r"image must be uint8 \(H, W, 3\)"):
        dense_crf(image.astype(np.float32), scores)
    with pytest.raises(ValueError, match=r"image must be uint8 \(H, W, 3\)"):
        dense_crf(image[..., :2], scores)
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(image, np.full_like(scores, np.nan))
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        dense_crf(image, scores, iterations=-1)
    with pytest.raises(ValueError, match="but 2 classes were given"):
        crf_labels_from_cams(image, scores[:1], [1, 2], alpha=4)
