"""Random walk: hand-worked steps, no leak across weak edges, fast (sparse) == dense (reference)."""
import pytest
import torch

from wsss.ops.affinity import feature_affinity
from wsss.ops.random_walk import (dense_affinity_matrix, propagate_cams, random_walk, random_walk_dense,
                                  transition_matrix)

BOTH = [random_walk, random_walk_dense]


@pytest.mark.parametrize("walk", BOTH)
def test_hand_worked_two_steps_radius_2(walk):
    """2x3 grid, radius 2: pixel (0,1) is the only source, joined to (0,2), (1,0), (1,1), (1,2) with a = 0.5.

    Degrees (beta 1): d(0,1) = 1 + 4*0.5 = 3, its partners 1.5, (0,0) is isolated (1). Starting from a unit
    score at (0,2): one step gives (0,1) = 0.5/3 = 1/6, (0,2) = 1/1.5 = 2/3; the second step gives
    (0,1) = (1/6 + 0.5*2/3)/3 = 1/6, (0,2) = (2/3 + 0.5/6)/1.5 = 1/2 and (1,*) = 0.5*(1/6)/1.5 = 1/18.
    """
    aff = torch.full((4, 1, 1), 0.5)
    scores = torch.zeros(1, 2, 3)
    scores[0, 0, 2] = 1.0
    one = walk(scores, aff, beta=1, logt=0, radius=2)
    two = walk(scores, aff, beta=1, logt=1, radius=2)
    assert torch.allclose(one[0], torch.tensor([[0, 1 / 6, 2 / 3], [0, 0, 0]]), atol=1e-6)
    assert torch.allclose(two[0], torch.tensor([[0, 1 / 6, 1 / 2], [1 / 18, 1 / 18, 1 / 18]]), atol=1e-6)


def test_dense_matrix_is_symmetric_with_unit_diagonal_and_reference_degrees():
    aff = torch.ones(34, 43, 55)          # a 47x63 grid (500x375 image at stride 8), every affinity 1
    mat = dense_affinity_matrix(aff, 47, 63)
    assert torch.equal(mat, mat.t()) and torch.equal(mat.diagonal(), torch.ones(47 * 63))
    degree = mat.sum(0).reshape(47, 63)
    assert degree[20, 20] == 69                                   # interior: 34 + 34 + self
    assert degree[20, :4].tolist() == [3, 6, 10, 14] and degree[20, -4:].tolist() == [18, 13, 8, 4]
    assert degree[0, 0] == 1 and degree[-1, 0] == 1 and degree[-1, -1] == 1   # isolated corners
    step = transition_matrix(aff, 47, 63, beta=8).to_dense()
    assert torch.allclose(step.sum(1), torch.ones(47 * 63))     # row-stochastic D^-1 W
    assert torch.allclose(step, (mat / mat.sum(0, keepdim=True)).t())


def two_regions(cross_feature_gap: float):
    """A 12x20 grid split into left/right halves whose features differ by ``cross_feature_gap``; one seed each."""
    feats = torch.zeros(1, 1, 12, 20)
    feats[..., 10:] = cross_feature_gap
    aff = feature_affinity(feats)[0]          # 1 inside a half, exp(-gap) across
    scores = torch.zeros(2, 12, 20)
    scores[0, 4:7, 2:5] = 1.0                 # class A on the left
    scores[1, 5:8, 15:18] = 1.0               # class B on the right
    return scores, aff


def connected(h: int, w: int) -> torch.Tensor:
    """Pixels with at least one pair (the reference graph leaves three corners isolated: degree 1)."""
    degree = dense_affinity_matrix(torch.ones(34, h - 4, w - 8), h, w).sum(0).reshape(h, w)
    return degree > 1


@pytest.mark.parametrize("walk", BOTH)
def test_no_leak_across_weak_affinities(walk):
    scores, aff = two_regions(cross_feature_gap=4.0)       # exp(-4)^8 ~ 1e-14 across
    out = walk(scores, aff, beta=8, logt=8)
    labels, linked = out.argmax(0), connected(12, 20)
    assert bool((labels[:, :10] == 0)[linked[:, :10]].all()) and bool((labels[:, 10:] == 1)[linked[:, 10:]].all())
    assert out[0, :, 10:].max() < 1e-9 and out[1, :, :10].max() < 1e-9
    assert out[0, :, :10][linked[:, :10]].min() > 1e-3       # but it does spread over its own region
    # each output pixel is a weighted average of input pixels (T's columns sum to 1)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_strong_cross_affinities_do_leak():
    """The same graph with the halves alike: class A reaches the right half (the no-leak test can fail)."""
    scores, aff = two_regions(cross_feature_gap=0.0)
    out = random_walk(scores, aff, beta=8, logt=8)
    assert out[0, :, 10:].max() > 1e-3


@pytest.mark.parametrize("shape,logt", [((3, 9, 13), 0), ((4, 20, 17), 3), ((21, 30, 40), 8)])
def test_fast_matches_dense_on_random_inputs(shape, logt):
    torch.manual_seed(sum(shape))
    k, h, w = shape
    scores = torch.rand(k, h, w)
    aff = feature_affinity(torch.rand(1, 8, h, w) * 3)[0]
    fast, dense = random_walk(scores, aff, 8, logt), random_walk_dense(scores, aff, 8, logt)
    assert fast.shape == dense.shape == shape
    assert torch.allclose(fast, dense, rtol=1e-4, atol=1e-6)
    assert (fast.argmax(0) == dense.argmax(0)).float().mean() >= 0.999


def test_float64_agreement_is_tight():
    torch.manual_seed(1)
    scores = torch.rand(3, 12, 15, dtype=torch.float64)
    aff = torch.rand(34, 8, 7, dtype=torch.float64)
    assert torch.allclose(random_walk(scores, aff, 3.5, 5), random_walk_dense(scores, aff, 3.5, 5),
                          rtol=1e-10, atol=1e-12)


def test_propagate_cams_keeps_constant_scores_and_shapes():
    """A constant map is a fixed point of V T (T's columns sum to 1), through pooling and upsampling too."""
    scores = torch.stack([torch.full((48, 80), 0.3), torch.full((48, 80), 0.7)])
    aff = torch.rand(34, 2, 2)                           # 6x10 grid
    out = propagate_cams(scores, aff, beta=8, logt=4)
    assert out.shape == (2, 48, 80)
    assert torch.allclose(out, scores, atol=1e-5)


@pytest.mark.parametrize("height,width", [(37, 75), (40, 72)])
def test_propagate_cams_pads_to_stride_and_fast_matches_dense(height, width):
    torch.manual_seed(height)
    scores = torch.rand(3, height, width)
    aff = torch.rand(34, 1, 2)                           # 5x10 / 5x9 grids -> (1, 2) / (1, 1) sources
    if width == 72:
        aff = aff[:, :, :1]
    fast = propagate_cams(scores, aff, beta=8, logt=8)
    dense = propagate_cams(scores, aff, beta=8, logt=8, dense=True)
    assert fast.shape == (3, height, width)
    assert torch.allclose(fast, dense, rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise_clear_value_errors():
    scores, aff = torch.rand(2, 9, 13), torch.rand(34, 5, 5)
    expected = r"aff has shape \(34, 4, 5\) but a 9x13 score grid with radius 5 needs \(34, 5, 5\)"
    with pytest.raises(ValueError, match=expected):
        random_walk(scores, torch.rand(34, 4, 5), 8, 8)
    with pytest.raises(ValueError, match="beta must be > 0"):
        random_walk(scores, aff, 0, 8)
    with pytest.raises(ValueError, match="logt must be an integer >= 0"):
        random_walk_dense(scores, aff, 8, -1)
    with pytest.raises(ValueError, match="logt must be an integer >= 0"):
        random_walk(scores, aff, 8, 1.5)
    with pytest.raises(ValueError, match="aff must be >= 0"):
        random_walk(scores, -aff, 8, 2)
    with pytest.raises(ValueError, match=r"scores must be \(K, h, w\)"):
        random_walk(scores[0], aff, 8, 2)
    with pytest.raises(ValueError, match="too small for pair radius 5"):
        propagate_cams(torch.rand(2, 32, 32), torch.rand(34, 1, 1), 8, 2)
