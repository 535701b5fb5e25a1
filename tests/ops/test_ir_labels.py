"""IRN's IR labels (irn.md §3): one-hot 0.7 unaries, the label CRF preset, the two thresholds and their combination."""
import numpy as np
import pytest

from wsss.ops.ir_labels import (IRN_CRF, crf_label_refine, ir_labels_from_cams, one_hot_scores,
                                threshold_crf_labels)

NO_CRF = {**IRN_CRF, "iterations": 0}  # argmax of the unary alone: the hard labels come back unchanged


def test_one_hot_scores_hand_worked_and_equal_to_pydensecrf_unary():
    from pydensecrf.utils import unary_from_labels

    labels = np.array([[0, 2], [1, 1]])
    scores = one_hot_scores(labels, 3)
    assert scores.shape == (3, 2, 2) and scores.dtype == np.float32
    assert scores[:, 0, 0].tolist() == pytest.approx([0.7, 0.15, 0.15])
    assert scores[:, 0, 1].tolist() == pytest.approx([0.15, 0.15, 0.7])
    unary = unary_from_labels(labels, 3, gt_prob=0.7, zero_unsure=False)
    assert np.allclose(-np.log(scores.reshape(3, -1)), unary, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        one_hot_scores(np.array([[3]]), 3)
    with pytest.raises(ValueError, match="gt_prob"):
        one_hot_scores(labels, 3, gt_prob=1.0)


def synthetic_image(seed=0, noise=20):
    """A 24x32 image: a bright square on a dark background, with noise; noisy hard labels of the square."""
    rng = np.random.default_rng(seed)
    image = np.full((24, 32, 3), 40, np.uint8)
    image[6:18, 8:22] = 200
    image = np.clip(image + rng.integers(-noise, noise + 1, image.shape), 0, 255).astype(np.uint8)
    labels = np.zeros((24, 32), np.int64)
    labels[5:19, 7:24] = 1
    labels[rng.random(labels.shape) < 0.1] = 2
    return image, labels


def test_label_crf_equals_pydensecrf_label_inference():
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    image, labels = synthetic_image()
    ours = crf_label_refine(image, labels, 3)
    crf = dcrf.DenseCRF2D(32, 24, 3)
    crf.setUnaryEnergy(unary_from_labels(labels, 3, gt_prob=0.7, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    reference = np.argmax(np.array(crf.inference(10)).reshape(3, 24, 32), axis=0)
    assert np.array_equal(ours, reference)
    assert (ours != labels).sum() > 0            # the CRF did change the noisy labels


def test_thresholds_and_combination_hand_worked():
    """One class (c = 6 -> label 7); scores 0.5, 0.2, 0.03, exactly 0.30 (a tie goes to the background)."""
    image = np.zeros((1, 4, 3), np.uint8)
    cams = np.array([[[0.5, 0.2, 0.03, 0.30]]], np.float32)
    classes = np.array([6])
    assert threshold_crf_labels(image, cams, classes, 0.30, NO_CRF).tolist() == [[7, 0, 0, 0]]
    assert threshold_crf_labels(image, cams, classes, 0.05, NO_CRF).tolist() == [[7, 7, 0, 7]]
    labels = ir_labels_from_cams(image, cams, classes, crf_params=NO_CRF)
    assert labels.dtype == np.uint8 and labels.tolist() == [[7, 255, 0, 255]]


def test_ir_labels_with_the_irn_crf_on_a_hand_made_cam():
    image, _ = synthetic_image(noise=2)
    cams = np.zeros((2, 24, 32), np.float32)
    cams[0, 7:17, 9:21] = 1.0           # the object's CAM (the square is rows 6..17, columns 8..21)
    cams[0, 4:20, 4:26] += 0.1          # a weak halo: foreground at 0.05 only
    cams[1, 0:3, 0:3] = 0.02            # a class too weak for either pass
    labels = ir_labels_from_cams(image, cams, np.array([0, 14]))
    assert labels.shape == (24, 32) and labels.dtype == np.uint8
    assert labels[12, 15] == 1 and labels[6, 8] == 1          # the CRF grows the CAM to the square's corner
    assert labels[22, 2] == 0 and labels[1, 1] == 0
    assert set(np.unique(labels).tolist()) <= {0, 1, 255}


def test_ir_labels_reject_bad_input():
    image = np.zeros((2, 2, 3), np.uint8)
    cams = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="bg"):
        ir_labels_from_cams(image, cams, np.array([0]), fg_threshold=0.05, bg_threshold=0.30)
    with pytest.raises(ValueError, match="2 classes"):
        ir_labels_from_cams(image, cams, np.array([0, 1]))
    with pytest.raises(ValueError, match="uint8"):
        ir_labels_from_cams(image.astype(np.float32), cams, np.array([0]))
