"""Pair offsets, affinity labels from la/ha CRF labels, feature affinity and the AffinityNet loss."""
import math

import numpy as np
import pytest
import torch

from wsss.data.palette import IGNORE_INDEX
from wsss.ops.affinity import (affinity_label_map, affinity_loss, downsample_labels,
                               feature_affinity, pair_index, pair_labels, pair_offsets, source_size)

IGN = IGNORE_INDEX


def counts(labels):
    return [int(labels[k].sum()) for k in ("bg_pos", "fg_pos", "neg")]


def test_pair_offsets_are_the_radius_5_half_disc_in_reference_order():
    offsets = pair_offsets(5)
    assert len(offsets) == 34
    assert offsets[:5] == ((0, 1), (0, 2), (0, 3), (0, 4), (1, -4))
    assert offsets[-5:] == ((4, -2), (4, -1), (4, 0), (4, 1), (4, 2))
    assert [sum(1 for dy, _ in offsets if dy == row) for row in range(5)] == [4, 9, 9, 7, 5]
    both_ways = set(offsets) | {(-dy, -dx) for dy, dx in offsets} | {(0, 0)}
    disc = {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if dy * dy + dx * dx < 25}
    assert both_ways == disc and len(both_ways) == 69


def test_pair_offsets_rejects_tiny_radius():
    with pytest.raises(ValueError, match="radius"):
        pair_offsets(1)


def test_source_window_and_pair_index():
    assert source_size(56, 56) == (52, 48)
    src, tgt = pair_index(56, 56)
    assert src.shape == (52 * 48,) and tgt.shape == (34, 52 * 48)
    assert src[0] == 4 and tgt[0, 0] == 5 and tgt[4, 0] == 56  # (0,4)->(0,5) and (0,4)->(1,0)
    with pytest.raises(ValueError, match="too small for pair radius 5"):
        source_size(8, 8)


def test_downsample_labels_majority_ignore_and_ties():
    labels = np.full((16, 24), IGN, np.uint8)
    labels[:8, :8] = 3                      # uniform block
    labels[:8, 8:16] = 0
    labels[:2, 8:16] = 5                    # 16 of 64 pixels: minority
    labels[8:, :8] = 7
    labels[8:, :4] = 2                      # 32 vs 32: tie -> smaller label
    labels[8:, 8:16] = 4
    labels[8:12, 8:16] = IGN                # half ignored: the rest votes
    small = downsample_labels(labels)
    assert small.tolist() == [[3, 0, IGN], [2, 4, IGN]]


def test_downsample_labels_partial_edge_blocks():
    labels = np.zeros((10, 9), np.uint8)
    labels[8:, :] = 6                      # the partial bottom row of blocks sees only label 6
    labels[:, 8] = 1                       # the partial right column sees 1 (and 6 at the corner)
    small = downsample_labels(labels)
    assert small.shape == (2, 2)
    assert small.tolist() == [[0, 1], [6, 1]]


def test_affinity_label_map_reference_rule():
    """fg from low alpha, bg from high alpha, la-bg/ha-fg and padding ignored (hand-made 2x3 blocks)."""
    la = np.zeros((16, 24), np.uint8)
    ha = np.zeros((16, 24), np.uint8)
    la[:8, :8], ha[:8, :8] = 1, 1               # both fg -> 1
    la[:8, 8:16], ha[:8, 8:16] = 0, 0           # both bg -> 0
    la[:8, 16:], ha[:8, 16:] = 0, 2             # la bg, ha fg -> ignore
    la[8:, :8], ha[8:, :8] = 2, 0               # la fg, ha bg -> ha wins: 0
    la[8:, 8:16], ha[8:, 8:16] = 3, 3           # both fg -> 3
    la[8:, 16:], ha[8:, 16:] = IGN, IGN         # crop padding -> ignore
    label_map = affinity_label_map(la, ha)
    assert label_map.tolist() == [[1, 0, IGN], [0, 3, IGN]]


def test_pair_labels_tiny_hand_case_radius_2():
    # radius 2: offsets (0,1), (1,-1), (1,0), (1,1); a 2x3 grid has one source pixel, (0, 1).
    assert pair_offsets(2) == ((0, 1), (1, -1), (1, 0), (1, 1))
    label_map = torch.tensor([[1, 0, IGN], [0, 3, IGN]])
    labels = pair_labels(label_map, radius=2)
    assert labels["bg_pos"].shape == (4, 1, 1)
    assert labels["bg_pos"].flatten().tolist() == [0, 1, 0, 0]   # (0,1)-(1,0): both background
    assert labels["fg_pos"].flatten().tolist() == [0, 0, 0, 0]
    assert labels["neg"].flatten().tolist() == [0, 0, 1, 0]      # (0,1)-(1,1): 0 vs 3; the ignores are nowhere


def test_pair_label_counts_square_with_ignored_rows():
    """56x56 map, 20x20 foreground square, 16 ignored rows at the bottom (counts also verified on psa).

    fg_pos = sum over offsets (20-|dy|)(20-|dx|) = 11000; neg = 2 * (34*400 - 11000) = 5200 (each in/out pair
    once per direction of the offset); valid pairs = sum over offsets (40-dy)*48 = 48*(34*40 - 68) = 62016, so
    bg_pos = 62016 - 11000 - 5200 = 45816.
    """
    label_map = torch.zeros(56, 56, dtype=torch.int64)
    label_map[10:30, 18:38] = 1
    label_map[40:] = IGN
    labels = pair_labels(label_map)
    assert labels["neg"].shape == (34, 52, 48) and labels["neg"].dtype == torch.float32
    assert counts(labels) == [45816, 11000, 5200]
    assert not bool(((labels["bg_pos"] + labels["fg_pos"] + labels["neg"]) > 1).any())


def test_pair_labels_half_ignored_map_has_only_background_pairs():
    label_map = torch.zeros(56, 56, dtype=torch.int64)
    label_map[:, 28:] = IGN
    assert counts(pair_labels(label_map)) == [40404, 0, 0]


def test_affinity_labels_end_to_end_and_batched_pair_labels():
    la = np.zeros((80, 96), np.uint8)
    ha = np.zeros((80, 96), np.uint8)
    la[16:48, 24:64] = 5
    ha[8:56, 16:72] = 5
    out = pair_labels(affinity_label_map(la, ha))
    assert out["fg_pos"].shape == (34, 6, 4)
    batch = pair_labels(torch.stack([affinity_label_map(la, ha)] * 2))
    assert batch["neg"].shape == (2, 34, 6, 4)
    assert torch.equal(batch["neg"][1], out["neg"])


def test_affinity_label_map_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        affinity_label_map(np.zeros((16, 16), np.uint8), np.zeros((16, 24), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        downsample_labels(np.zeros((16, 16), np.float32))


def test_feature_affinity_hand_value_and_shape():
    feats = torch.zeros(1, 2, 5, 9)
    feats[0, :, 0, 5] = torch.tensor([1.0, 3.0])        # partner of source (0,4) at offset (0,1)
    aff = feature_affinity(feats)
    assert aff.shape == (1, 34, 1, 1)
    assert aff[0, 0, 0, 0].item() == pytest.approx(math.exp(-2.0))
    assert torch.allclose(aff[0, 1:], torch.ones(33, 1, 1))
    assert feature_affinity(torch.rand(2, 8, 56, 56)).shape == (2, 34, 52, 48)


def test_feature_affinity_matches_flat_index_formulation():
    torch.manual_seed(0)
    feats = torch.rand(2, 6, 9, 13)
    src, tgt = pair_index(9, 13)
    flat = feats.flatten(2)
    naive = torch.exp(-(flat[:, :, tgt] - flat[:, :, src][:, :, None]).abs().mean(1))   # (B, P, S)
    assert torch.allclose(feature_affinity(feats).flatten(2), naive, atol=1e-6)


def test_feature_affinity_gradients_and_bad_input():
    feats = torch.rand(1, 4, 6, 10, requires_grad=True)
    feature_affinity(feats).sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    with pytest.raises(ValueError, match=r"\(B, D, h, w\)"):
        feature_affinity(torch.rand(4, 6, 10))


def test_affinity_loss_hand_computed():
    aff = torch.tensor([[[[0.5, 0.25]], [[0.8, 0.1]]]], requires_grad=True)          # (1, 2, 1, 2)
    labels = {"bg_pos": torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]]),
              "fg_pos": torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]]),
              "neg": torch.tensor([[[[0.0, 0.0]], [[0.0, 1.0]]]])}
    out = affinity_loss(aff, labels)
    # bg = (ln 2 + ln 1.25) / 2, fg = ln 4, neg = -ln 0.9 (up to the 1e-5 guards)
    assert out["bg"].item() == pytest.approx(0.458145, abs=1e-4)
    assert out["fg"].item() == pytest.approx(1.386294, abs=1e-4)
    assert out["neg"].item() == pytest.approx(0.105361, abs=1e-4)
    assert out["loss"].item() == pytest.approx(0.458145 / 4 + 1.386294 / 4 + 0.105361 / 2, abs=1e-4)
    out["loss"].backward()
    assert torch.isfinite(aff.grad).all()


def test_affinity_loss_term_without_pairs_is_zero():
    aff = torch.full((1, 34, 2, 2), 0.5)
    zeros = torch.zeros_like(aff)
    out = affinity_loss(aff, {"bg_pos": torch.ones_like(aff), "fg_pos": zeros, "neg": zeros})
    assert out["fg"].item() == 0 and out["neg"].item() == 0
    assert out["loss"].item() == pytest.approx(math.log(2) / 4, abs=1e-4)


def test_affinity_loss_bad_labels():
    aff = torch.full((1, 34, 2, 2), 0.5)
    with pytest.raises(ValueError, match="lack"):
        affinity_loss(aff, {"bg_pos": aff})
    bad = {"bg_pos": aff, "fg_pos": aff, "neg": torch.zeros(1, 34, 2, 3)}
    with pytest.raises(ValueError, match=r"labels\['neg'\] has shape"):
        affinity_loss(aff, bad)
