"""Pseudo ground truth thresholds and the class-balanced, per-image-gated mask loss on hand-made examples."""
import math

import pytest
import torch

from wsss.ops.pseudo_labels import balanced_mask_loss, clean_masks, pseudo_gt_from_masks, pseudo_gt_to_index


def column(*channels):
    """(1, K, 1, W) from K lists of W values."""
    return torch.tensor(channels, dtype=torch.float32).unsqueeze(0).unsqueeze(2)


def test_thresholds_hand_example():
    # bg peak 0.9 -> 0.63; class peak 0.5 -> max(0.3, 0.2) = 0.3, strict: 0.3 is not positive.
    masks = column([0.9, 0.6, 0.5, 0.1], [0.1, 0.5, 0.45, 0.3])
    gt = pseudo_gt_from_masks(masks)
    assert gt[0, :, 0].tolist() == [[1, 0, 0, 0], [0, 1, 1, 0]]
    assert pseudo_gt_to_index(gt)[0, 0].tolist() == [0, 1, 1, 255]


def test_floor_and_ambiguous_pixels():
    # Class 1 peaks at 0.25 -> threshold floor 0.2; class 2 peaks at 0.8 -> 0.48.
    masks = column([0.1, 0.1, 0.1], [0.25, 0.21, 0.25], [0.1, 0.8, 0.5])
    gt = pseudo_gt_from_masks(masks)
    # pixel 0: only class 1; pixel 1: classes 1 and 2 -> ambiguous; pixel 2: classes 1 and 2 -> ambiguous.
    assert pseudo_gt_to_index(gt)[0, 0].tolist() == [1, 255, 255]
    # A class whose peak is below the floor is never positive.
    low = pseudo_gt_from_masks(column([0.9, 0.8], [0.19, 0.15]))
    assert low[0, 1].sum() == 0


def test_clean_masks_zeroes_absent_classes_only():
    masks = torch.ones(1, 3, 2, 2)
    cleaned = clean_masks(masks, torch.tensor([[0.0, 1.0]]))
    assert cleaned[0, :, 0, 0].tolist() == [1.0, 0.0, 1.0]
    assert masks.sum() == 12  # input untouched


def test_balanced_loss_hand_value():
    # pixels: bg, c1, c1, unlabelled. n = (1, 2, 0), N = 3 -> weights bg 2/4, c1 1/4.
    gt = column([1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0])
    logits = torch.zeros(1, 3, 1, 4)  # CE = ln 3 everywhere
    loss = balanced_mask_loss(logits, gt, torch.tensor([[1.0, 0.0]]))
    expected = (0.5 + 0.25 + 0.25 + 0.0) * math.log(3.0) / 4
    torch.testing.assert_close(loss, torch.tensor([expected]))


def test_balanced_loss_is_zeroed_when_classes_are_missing():
    gt = column([1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0])
    logits = torch.randn(1, 3, 1, 4)
    # The image label has two classes but the pseudo GT only one: this image's loss is 0.
    assert balanced_mask_loss(logits, gt, torch.tensor([[1.0, 1.0]])).item() == 0.0
    assert balanced_mask_loss(logits, gt, torch.tensor([[1.0, 0.0]])).item() > 0.0


def test_balanced_loss_upsamples_logits_and_backpropagates():
    gen = torch.Generator().manual_seed(0)
    masks = torch.softmax(torch.randn(2, 4, 16, 16, generator=gen), 1)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    gt = pseudo_gt_from_masks(clean_masks(masks, labels))
    logits = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    loss = balanced_mask_loss(logits, gt, labels)
    assert loss.shape == (2,)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("call,match", [
    (lambda: pseudo_gt_from_masks(torch.rand(3, 4, 4)), r"\(B, K, H, W\)"),
    (lambda: clean_masks(torch.rand(1, 3, 2, 2), torch.ones(1, 3)), "labels"),
    (lambda: balanced_mask_loss(torch.rand(1, 4, 2, 2), torch.rand(1, 3, 2, 2), torch.ones(1, 2)), "logits"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
