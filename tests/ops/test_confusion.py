"""Confusion matrix and scores: a hand-worked case, predicted ignore, absent classes, fast vs plain, bad input."""
import numpy as np
import pytest

from wsss.ops.confusion import (ConfusionMatrix, confusion_matrix, iou_from_confusion, miou, pair_counts,
                                pixel_accuracy, precision_recall)

# Worked by hand: 3 classes, two gt-ignore pixels, one pixel of class 1 predicted as ignore.
GT = np.array([[0, 0, 1, 1],
               [0, 2, 1, 255],
               [2, 2, 255, 1]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 0, 2],
                 [2, 0, 1, 255]], np.uint8)
#                 pred 0  1  2  ignore
HAND = np.array([[2, 1, 0, 0],    # gt 0: 3 pixels
                 [1, 2, 0, 1],    # gt 1: 4 pixels, one predicted ignore (a false negative)
                 [1, 0, 2, 0]])   # gt 2: 3 pixels
# IoU: 2 / (3 + 4 - 2), 2 / (4 + 3 - 2), 2 / (3 + 2 - 2)
HAND_IOU = np.array([2 / 5, 2 / 5, 2 / 3])


def plain_confusion(gt, pred, n, ignore=255):
    """One pixel at a time, SEAM's policy: gt ignore skipped, predicted ignore in column n."""
    cm = np.zeros((n, n + 1), np.int64)
    for g, p in zip(np.ravel(gt), np.ravel(pred)):
        if g != ignore:
            cm[g, n if p == ignore else p] += 1
    return cm


def test_hand_worked_3x3():
    cm = confusion_matrix(GT, PRED, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 4)
    np.testing.assert_array_equal(cm, HAND)
    np.testing.assert_allclose(iou_from_confusion(cm), HAND_IOU)
    assert miou(cm) == pytest.approx(22 / 45)
    assert miou(cm, include_background=False) == pytest.approx((2 / 5 + 2 / 3) / 2)
    assert pixel_accuracy(cm) == pytest.approx(6 / 10)
    precision, recall = precision_recall(cm)
    np.testing.assert_allclose(precision, [2 / 4, 2 / 3, 2 / 2])
    np.testing.assert_allclose(recall, [2 / 3, 2 / 4, 2 / 3])


def test_predicted_ignore_is_a_false_negative_only():
    # Same as SEAM: class 1's IoU counts the pixel in its ground truth, no class counts it as predicted.
    cm = confusion_matrix(GT, PRED, 3)
    tp, gt_total, pred_total = cm[1, 1], cm[1].sum(), cm[:, 1].sum()
    assert (tp, gt_total, pred_total) == (2, 4, 3)
    relabelled = PRED.copy()
    relabelled[PRED == 255] = 1
    assert iou_from_confusion(confusion_matrix(GT, relabelled, 3))[1] > iou_from_confusion(cm)[1]


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = confusion_matrix(GT, PRED, 4)  # class 3 in neither map
    iou = iou_from_confusion(cm)
    assert np.isnan(iou[3])
    np.testing.assert_allclose(iou[:3], HAND_IOU)
    assert miou(cm) == pytest.approx(22 / 45)
    pred_only = PRED.copy()
    pred_only[0, 0] = 3  # now predicted, never in gt: IoU 0, and it counts
    cm = confusion_matrix(GT, pred_only, 4)
    assert iou_from_confusion(cm)[3] == 0
    assert miou(cm) == pytest.approx(np.mean(iou_from_confusion(cm)))


def test_square_matrix_gives_the_same_scores_without_ignored_predictions():
    square = HAND[:, :3]
    cm = ConfusionMatrix(3)
    cm.add(square)
    np.testing.assert_array_equal(cm.matrix[:, 3], 0)
    np.testing.assert_allclose(iou_from_confusion(square), iou_from_confusion(cm.matrix))


def test_empty_matrix_scores_are_nan():
    cm = np.zeros((3, 4), np.int64)
    assert np.isnan(iou_from_confusion(cm)).all()
    assert np.isnan(miou(cm)) and np.isnan(pixel_accuracy(cm))


@pytest.mark.parametrize("smooth", [True, False])
def test_fast_paths_agree_with_plain(smooth):
    rng = np.random.default_rng(0 if smooth else 1)
    n = 5
    if smooth:  # long runs: the run-length path of pair_counts
        gt = np.repeat(rng.integers(0, n, (40, 6)), 20, axis=1).astype(np.uint8)
        pred = np.repeat(rng.integers(0, n, (40, 4)), 30, axis=1).astype(np.uint8)
        gt[:, 20:23] = 255  # an ignore band
        pred[5:8, :15] = 255
    else:  # salt and pepper: the per-pixel bincount
        gt = rng.integers(0, n, (40, 60)).astype(np.uint8)
        pred = rng.integers(0, n, (40, 60)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = 255
        pred[rng.random(pred.shape) < 0.05] = 255
    expected = plain_confusion(gt, pred, n)
    np.testing.assert_array_equal(confusion_matrix(gt, pred, n), expected)            # uint8 path
    np.testing.assert_array_equal(confusion_matrix(gt.astype(np.int64), pred.astype(np.int32), n), expected)
    hist = np.zeros((256, 256), np.int64)
    np.add.at(hist, (gt.ravel(), pred.ravel()), 1)
    codes, counts = pair_counts(gt, pred)
    runs = np.count_nonzero(np.diff((gt.astype(np.int64) << 8 | pred).ravel())) + 1
    assert (8 * runs <= gt.size) == smooth  # the path under test is the one taken
    listed = np.zeros(1 << 16, np.int64)
    np.add.at(listed, codes, counts)
    np.testing.assert_array_equal(listed.reshape(256, 256), hist)


def test_tiny_and_empty_maps():
    assert confusion_matrix(np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.uint8), 2).sum() == 0
    cm = confusion_matrix(np.array([[1]], np.uint8), np.array([[1]], np.uint8), 2)
    np.testing.assert_array_equal(cm, [[0, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("gt, pred, message", [
    (GT, PRED[:2], "shape"),
    (np.where(GT == 2, 7, GT).astype(np.uint8), PRED, "gt holds label values [7]"),
    (GT, np.where(PRED == 2, 9, PRED).astype(np.uint8), "pred holds label values [9]"),
    (GT.astype(np.int64) - 1, PRED, "gt holds label values [-1, 254]"),
    (GT, np.where(GT == 255, 40, PRED).astype(np.uint8), "pred holds label values [40]"),  # even under gt 255
    (GT, PRED.astype(np.float32), "integer"),
])
def test_bad_input(gt, pred, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        confusion_matrix(gt, pred, 3)


def test_bad_matrix_shape():
    with pytest.raises(ValueError, match="confusion matrix"):
        iou_from_confusion(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\(3, 3\) or \(3, 4\)"):
        ConfusionMatrix(3).add(np.zeros((2, 3)))


def test_accumulator_update_merge_compute():
    rng = np.random.default_rng(2)
    pairs = [(rng.integers(0, 4, (6, 7)).astype(np.uint8), rng.integers(0, 4, (6, 7)).astype(np.uint8))
             for _ in range(4)]
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    for gt, pred in pairs[:2]:
        first.update(gt, pred)
    for gt, pred in pairs[2:]:
        second.update(gt, pred)
    merged = first.merge(second)
    whole = confusion_matrix(np.concatenate([g for g, _ in pairs]), np.concatenate([p for _, p in pairs]), 4)
    np.testing.assert_array_equal(merged.matrix, whole)
    scores = merged.compute()
    assert set(scores) == {"iou", "precision", "recall", "miou", "miou_foreground", "pixel_accuracy"}
    assert scores["iou"].shape == (4,)
    assert scores["miou"] == pytest.approx(np.nanmean(iou_from_confusion(whole)))
    with pytest.raises(ValueError, match="different classes"):
        merged.merge(ConfusionMatrix(5))
