"""nGWP and the focal mask penalty against hand-computed values."""
import math

import pytest
import torch

from wsss.ops.global_weighted_pooling import focal_mask_penalty, ngwp_class_scores, \
    normalized_global_weighted_pooling


def test_ngwp_hand_value():
    logits = torch.tensor([2.0, 4.0]).view(1, 1, 1, 2)
    masks = torch.tensor([0.5, 0.25]).view(1, 1, 1, 2)
    # (2 * 0.5 + 4 * 0.25) / (1 + 0.75) = 8 / 7
    torch.testing.assert_close(normalized_global_weighted_pooling(logits, masks), torch.tensor([[8 / 7]]))


def test_ngwp_sums_raw_pixels():
    # Doubling the image (same values) doubles both sums: the +1 then matters less, so the score rises.
    logits, masks = torch.full((1, 1, 1, 2), 3.0), torch.full((1, 1, 1, 2), 0.5)
    small = normalized_global_weighted_pooling(logits, masks)
    large = normalized_global_weighted_pooling(logits.repeat(1, 1, 2, 1), masks.repeat(1, 1, 2, 1))
    torch.testing.assert_close(small, torch.tensor([[3.0 / 2.0]]))
    torch.testing.assert_close(large, torch.tensor([[6.0 / 3.0]]))


def test_focal_penalty_hand_values():
    masks = torch.tensor([[0.5, 0.5], [0.0, 1.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([[0.5 ** 3 * math.log(0.51), 0.5 ** 3 * math.log(0.51)]])
    torch.testing.assert_close(focal_mask_penalty(masks), expected)
    full = torch.ones(1, 1, 2, 2)
    torch.testing.assert_close(focal_mask_penalty(full), torch.zeros(1, 1))
    torch.testing.assert_close(focal_mask_penalty(masks, power=1, lam=0.1),
                               torch.tensor([[0.5 * math.log(0.6)] * 2]))


def test_class_scores_hand_value():
    # Pixel a: bg 1, fg 1 -> masks (1/2, 1/2); pixel b: bg 1, fg 1 + ln 3 -> masks (1/4, 3/4).
    fg = torch.tensor([1.0, 1.0 + math.log(3.0)])
    logits = torch.stack([torch.ones(2), fg]).view(1, 2, 1, 2)
    scores, masks = ngwp_class_scores(logits)
    ngwp = (1.0 * 0.5 + (1.0 + math.log(3.0)) * 0.75) / (1.0 + 1.25)
    penalty = (1 - 0.625) ** 3 * math.log(0.01 + 0.625)
    assert scores.shape == (1, 1)
    torch.testing.assert_close(scores, torch.tensor([[ngwp + penalty]]))
    torch.testing.assert_close(masks[0, :, 0, 1], torch.tensor([0.25, 0.75]))


def test_gradients_are_finite():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    scores, _ = ngwp_class_scores(logits)
    scores.sum().backward()
    assert scores.shape == (2, 4) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("call,match", [
    (lambda: normalized_global_weighted_pooling(torch.rand(2, 3), torch.rand(2, 3)), r"\(B, K, H, W\)"),
    (lambda: normalized_global_weighted_pooling(torch.rand(1, 2, 3, 3), torch.rand(1, 3, 3, 3)), "same shape"),
    (lambda: focal_mask_penalty(torch.rand(1, 2, 3, 3), lam=0.0), "lam"),
    (lambda: ngwp_class_scores(torch.rand(1, 1, 3, 3)), "background"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
