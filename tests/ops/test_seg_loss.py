"""Stage-2 losses: plain and balanced CE (hand-worked, empty sets, all-ignore), label resizing, the MSC sum."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.ops.seg_loss import (balanced_cross_entropy, cross_entropy, pixel_cross_entropy, resize_labels,
                               segmentation_loss)


def ce_by_hand(scores, label):
    """-log softmax(scores)[label] for one pixel, in plain Python."""
    return math.log(sum(math.exp(s) for s in scores)) - scores[label]


# one image, 3 classes, 2x2 pixels: labels [[0, 0], [2, 255]]
SCORES = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 3.0], [9.0, 9.0, 9.0]]
LABELS = torch.tensor([[[0, 0], [2, 255]]])


def logits_of(scores):
    return torch.tensor(scores, dtype=torch.float64).T.reshape(1, 3, 2, 2).requires_grad_(True)


def test_cross_entropy_hand_worked():
    a, b, c = ce_by_hand(SCORES[0], 0), ce_by_hand(SCORES[1], 0), ce_by_hand(SCORES[2], 2)
    logits = logits_of(SCORES)
    assert float(cross_entropy(logits, LABELS).detach()) == pytest.approx((a + b + c) / 3)
    assert float(balanced_cross_entropy(logits, LABELS).detach()) == pytest.approx(0.5 * ((a + b) / 2 + c))
    per_pixel = pixel_cross_entropy(logits, LABELS).detach()
    assert per_pixel[0, 1, 1] == 0 and float(per_pixel[0, 0, 1]) == pytest.approx(b)


def test_cross_entropy_equals_torch_mean_over_valid_pixels():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 6, 7)
    labels = torch.randint(0, 5, (3, 6, 7))
    labels[0, :2] = 255
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))


def test_balanced_cross_entropy_pools_the_whole_batch():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    labels = torch.tensor([[[0, 0, 0], [0, 0, 255], [0, 0, 0]],  # image 1: background only
                           [[1, 3, 3], [255, 2, 0], [1, 1, 1]]])  # image 2: mostly foreground
    bg, fg = [], []
    for b in range(2):
        for i in range(3):
            for j in range(3):
                y = int(labels[b, i, j])
                if y != 255:
                    (bg if y == 0 else fg).append(ce_by_hand(logits[b, :, i, j].tolist(), y))
    expected = 0.5 * (sum(bg) / len(bg) + sum(fg) / len(fg))
    assert float(balanced_cross_entropy(logits, labels).detach()) == pytest.approx(expected)
    grad_ok = torch.autograd.gradcheck(lambda x: balanced_cross_entropy(x, labels), (logits.requires_grad_(True),))
    assert grad_ok


def test_empty_sets_average_over_the_others():
    logits = logits_of(SCORES)
    a, b, c = ce_by_hand(SCORES[0], 0), ce_by_hand(SCORES[1], 0), ce_by_hand(SCORES[2], 2)
    only_bg = torch.tensor([[[0, 0], [255, 255]]])
    only_fg = torch.tensor([[[255, 255], [2, 255]]])
    assert float(balanced_cross_entropy(logits, only_bg).detach()) == pytest.approx((a + b) / 2)
    assert float(balanced_cross_entropy(logits, only_fg).detach()) == pytest.approx(c)


def test_all_ignore_gives_zero_with_a_finite_gradient():
    logits = logits_of(SCORES)
    ignored = torch.full((1, 2, 2), 255)
    assert torch.isnan(F.cross_entropy(logits, ignored, ignore_index=255))  # what torch itself gives
    for loss_fn in (cross_entropy, balanced_cross_entropy):
        loss = loss_fn(logits, ignored)
        assert float(loss.detach()) == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() == 0


def test_resize_labels_samples_pixel_centres_like_pil_nearest():
    row = torch.arange(321).reshape(1, 1, 321).expand(1, 3, 321)
    out = resize_labels(row, (3, 41))[0, 0]
    assert out[:3].tolist() == [3, 11, 19]
    assert out.tolist() == [int((j + 0.5) * 321 / 41) for j in range(41)]
    pil = Image.fromarray(np.arange(321, dtype=np.int32)[None].repeat(3, 0), mode="I").resize((41, 3), Image.NEAREST)
    assert out.tolist() == np.asarray(pil)[0].tolist()
    labels = torch.full((2, 8, 8), 255)
    labels[:, :4] = 7
    small = resize_labels(labels, (2, 2))
    assert small.dtype == torch.int64 and small[:, 0].eq(7).all() and small[:, 1].eq(255).all()
    assert torch.equal(resize_labels(labels, (8, 8)), labels)


def test_segmentation_loss_sums_every_output_at_its_own_size():
    torch.manual_seed(2)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[:, :, :3] = 255
    outputs = {"logits_full": torch.randn(2, 3, 8, 8), "logits_s0.5": torch.randn(2, 3, 4, 4),
               "logits_s0.75": torch.randn(2, 3, 6, 6), "logits": torch.randn(2, 3, 8, 8)}
    out = segmentation_loss(outputs, labels)
    assert set(out) == {"loss", "ce_full", "ce_s0.5", "ce_s0.75", "ce"}
    terms = {k: cross_entropy(v, resize_labels(labels, v.shape[-2:])) for k, v in outputs.items()}
    torch.testing.assert_close(out["loss"], sum(terms.values()))
    torch.testing.assert_close(out["ce_s0.5"], terms["logits_s0.5"])
    aux = segmentation_loss({"logits": outputs["logits"], "aux_logits": outputs["logits_full"]}, labels,
                            kind="balanced_ce", weights={"aux_logits": 0.5})
    torch.testing.assert_close(aux["loss"], aux["ce"] + 0.5 * aux["aux_ce"])


def test_bad_inputs_raise_value_errors():
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="hold 3,"):
        cross_entropy(logits, torch.tensor([[[0, 3], [1, 2]]]))
    with pytest.raises(ValueError, match="hold -1,"):
        balanced_cross_entropy(logits, torch.tensor([[[0, -1], [1, 2]]]))
    with pytest.raises(ValueError, match="labels must be integer"):
        cross_entropy(logits, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="logits must be float"):
        cross_entropy(torch.zeros(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="resize the labels"):
        cross_entropy(logits, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        segmentation_loss({"logits": logits}, torch.zeros(1, 2, 2, dtype=torch.long), kind="dice")
    with pytest.raises(ValueError, match="unknown outputs"):
        segmentation_loss({"logits": logits}, torch.zeros(1, 2, 2, dtype=torch.long), weights={"aux": 0.5})
