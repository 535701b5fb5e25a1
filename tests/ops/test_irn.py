"""IRN maths (irn.md §4.6, §5): label sampling, pair labels, losses with their 1e-5 placement, the boundary walk."""
import math

import numpy as np
import pytest
import torch

from wsss.ops.irn import (direction_targets, downsample_ir_label, flip_averaged_boundary, irn_losses,
                          irn_pair_labels, pair_displacements, propagate_boundaries, semantic_labels)
from wsss.ops.path_index import boundary_affinity, irn_directions

EPS = 1e-5


def test_label_sampling_takes_pixel_4i_plus_2():
    label = torch.arange(16 * 8).reshape(16, 8)
    small = downsample_ir_label(label)
    assert small.shape == (4, 2)
    assert small.tolist() == [[label[y, x].item() for x in (2, 6)] for y in (2, 6, 10, 14)]
    with pytest.raises(ValueError, match="multiple"):
        downsample_ir_label(torch.zeros(10, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        downsample_ir_label(torch.zeros(8, 8))


def test_pair_labels_hand_worked_radius_2():
    label = torch.tensor([[0, 0, 1, 1, 255],
                          [0, 0, 1, 1, 1],
                          [2, 2, 2, 2, 2]])
    labels = irn_pair_labels(label, radius=2)      # directions (0,1), (1,0), (1,-1), (1,1); sources (0..1, 1..3)
    assert set(labels) == {"bg_pos", "fg_pos", "neg"} and labels["neg"].shape == (4, 2, 3)
    at = {k: v[:, 0, 0].tolist() for k, v in labels.items()}     # source (0, 1), label 0
    assert at == {"bg_pos": [0, 1, 1, 0], "fg_pos": [0, 0, 0, 0], "neg": [1, 0, 0, 1]}
    at = {k: v[:, 0, 2].tolist() for k, v in labels.items()}     # source (0, 3), label 1; (0, 4) is ignored
    assert at == {"bg_pos": [0, 0, 0, 0], "fg_pos": [0, 1, 1, 1], "neg": [0, 0, 0, 0]}
    total = sum(v for v in labels.values())
    assert total.max() == 1 and total[0, 0, 2] == 0                   # disjoint; the ignored pair in none
    with pytest.raises(ValueError, match="integer"):
        irn_pair_labels(label.float(), radius=2)


def two_instances(h=12, w=20):
    """Two objects of different classes on background, and the ideal field D(p) = centroid - p (0 on background)."""
    label = torch.zeros(h, w, dtype=torch.int64)
    label[2:8, 2:8], label[4:10, 12:18] = 1, 2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    disp = torch.zeros(1, 2, h, w, dtype=torch.float64)
    for cls in (1, 2):
        inside = label == cls
        cy, cx = ys[inside].mean(), xs[inside].mean()
        disp[0, 0][inside], disp[0, 1][inside] = cy - ys[inside], cx - xs[inside]
    return label, disp


def test_displacement_losses_vanish_for_the_ideal_field():
    label, disp = two_instances()
    labels = {k: v[None] for k, v in irn_pair_labels(label, radius=5).items()}
    aff = torch.full_like(labels["neg"], 0.5, dtype=torch.float64)
    losses = irn_losses(aff, disp, labels, radius=5)
    assert losses["dp_fg"] == 0 and losses["dp_bg"] == 0
    assert labels["fg_pos"].sum() > 0 and labels["bg_pos"].sum() > 0
    shifted = disp.clone()
    shifted[0, 1, 2:8, 2:8] += 1.0          # move one object's centroid estimate: its pairs still agree...
    assert irn_losses(aff, shifted, labels, radius=5)["dp_fg"] == 0
    shifted[0, 1, 5, 5] += 1.0              # ...but one pixel off its centroid breaks them
    assert irn_losses(aff, shifted, labels, radius=5)["dp_fg"] > 0


def test_pair_displacements_and_targets():
    disp = torch.zeros(1, 2, 3, 4)
    disp[0, 0] = torch.arange(12.0).reshape(3, 4)                   # D_y = 4y + x
    delta = pair_displacements(disp, radius=2)                       # (1, 2, 4, 2, 2)
    assert delta.shape == (1, 2, 4, 2, 2)
    # D(i) - D(i + d) = -(4 dy + dx) everywhere for channel 0, 0 for channel 1
    expected = [-(4 * dy + dx) for dy, dx in irn_directions(2)]
    assert delta[0, 0, :, 0, 0].tolist() == expected and delta[0, 1].abs().sum() == 0
    target = direction_targets(2)
    assert target.shape == (1, 2, 4, 1, 1)
    assert target[0, :, :, 0, 0].t().tolist() == [list(d) for d in irn_directions(2)]


def test_losses_hand_worked_with_the_reference_epsilon_placement():
    """A 2x3 grid at radius 2: one source (0, 1) and four pairs, one per direction (0,1), (1,0), (1,-1), (1,1)."""
    aff = torch.tensor([1.0, 0.25, 0.0, 0.5], dtype=torch.float64).reshape(1, 4, 1, 1)
    labels = {"bg_pos": torch.tensor([1.0, 0, 0, 0]), "fg_pos": torch.tensor([0, 1.0, 0, 0]),
              "neg": torch.tensor([0, 0, 1.0, 1.0])}
    labels = {k: v.reshape(1, 4, 1, 1) for k, v in labels.items()}
    disp = torch.zeros(1, 2, 2, 3, dtype=torch.float64)
    disp[0, :, 0, 1] = torch.tensor([0.5, -2.0])     # the source
    disp[0, :, 0, 2] = torch.tensor([1.0, 1.0])      # partner of (0, 1): a bg pair, delta (-0.5, -3)
    disp[0, :, 1, 1] = torch.tensor([-1.0, 0.0])     # partner of (1, 0): a fg pair, delta (1.5, -2), d (1, 0)
    out = irn_losses(aff, disp, labels, radius=2)
    pos = (-math.log(1 + EPS) / (1 + EPS) - math.log(0.25 + EPS) / (1 + EPS)) / 2
    neg = (-math.log(1 + EPS) - math.log(0.5 + EPS)) / (2 + EPS)
    dp_bg = (0.5 + 3.0) / (2 * 1 + EPS)
    dp_fg = (abs(1.5 - 1) + abs(-2.0 - 0)) / (2 * 1 + EPS)
    for name, value in (("pos_aff", pos), ("neg_aff", neg), ("dp_bg", dp_bg), ("dp_fg", dp_fg)):
        assert out[name].item() == pytest.approx(value, rel=1e-12, abs=0), name
    assert out["loss"].item() == pytest.approx((pos + neg) / 2 + (dp_fg + dp_bg) / 2, rel=1e-12)
    # the placement matters at this size: 2 * (S + 1e-5) instead of 2 * S + 1e-5 is detectably different
    assert abs(out["dp_bg"].item() - 3.5 / (2 * (1 + EPS))) > 1e-7


def test_losses_reject_bad_input_and_give_gradients():
    labels = {k: torch.zeros(1, 4, 1, 1) for k in ("bg_pos", "fg_pos", "neg")}
    aff = torch.full((1, 4, 1, 1), 0.5, requires_grad=True)
    disp = torch.zeros(1, 2, 2, 3, requires_grad=True)
    labels["neg"][0, 2] = labels["fg_pos"][0, 1] = 1
    out = irn_losses(aff, disp, labels, radius=2)
    out["loss"].backward()
    assert aff.grad[0, 2] > 0 and aff.grad[0, 1] < 0 and disp.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lack"):
        irn_losses(aff, disp, {"neg": labels["neg"]}, radius=2)
    with pytest.raises(ValueError, match="radius 3"):
        irn_losses(aff, disp, labels, radius=3)
    with pytest.raises(ValueError, match="disp"):
        irn_losses(aff, disp[0], labels, radius=2)


def walled_cams(wall: bool):
    """A 13x17 grid, class A seeded on the left, class B on the right, a vertical boundary wall at column 8."""
    boundary = torch.zeros(13, 17, dtype=torch.float64)
    if wall:
        boundary[:, 8] = 1.0
    cams = torch.zeros(2, 13, 17, dtype=torch.float64)
    cams[0, 5:8, 2:5] = 1.0
    cams[1, 4:7, 12:15] = 1.0
    return cams, boundary


def test_boundary_wall_stops_the_walk_leaking():
    cams, boundary = walled_cams(wall=True)
    walked = propagate_boundaries(cams, boundary, beta=10, logt=8)
    assert walked.shape == (2, 13, 17)
    assert walked[0, :, 9:].abs().max() == 0 and walked[1, :, :8].abs().max() == 0
    assert walked[0, :, :8].sum() > 0 and walked[1, :, 9:].sum() > 0
    open_cams, no_wall = walled_cams(wall=False)
    leaked = propagate_boundaries(open_cams, no_wall, beta=10, logt=8)
    assert leaked[0, :, 9:].max() > 1e-3                                 # without the wall it spreads


def reference_walk(cams, boundary, radius=5, beta=10, logt=8):
    """IRN's propagate_to_edge written plainly: padded grid, dense symmetric A in IRN's pair order, crop to the
    image nodes, column-normalised A^beta squared logt times, cams (1 - b) on the left."""
    k, h, w = cams.shape
    hp, wp = h + radius, w + 2 * radius
    padded = torch.ones(hp, wp, dtype=boundary.dtype)
    padded[:h, radius:radius + w] = boundary
    aff = boundary_affinity(padded[None], radius)[0]                   # (P, h + 1, w + 2)
    mat = torch.eye(hp * wp, dtype=boundary.dtype)
    for p, (dy, dx) in enumerate(irn_directions(radius)):
        for i in range(aff.shape[1]):
            for j in range(aff.shape[2]):
                src, dst = i * wp + radius - 1 + j, (i + dy) * wp + radius - 1 + j + dx
                mat[src, dst] = mat[dst, src] = aff[p, i, j]
    keep = torch.zeros(hp, wp, dtype=torch.bool)
    keep[:h, radius:radius + w] = True
    mat = mat[keep.flatten()][:, keep.flatten()] ** beta
    trans = mat / mat.sum(0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    return ((cams * (1 - boundary)).reshape(k, -1) @ trans).reshape(k, h, w)


def test_sparse_walk_equals_dense_and_the_plain_reference():
    torch.manual_seed(0)
    cams = torch.rand(3, 13, 17, dtype=torch.float64)
    boundary = torch.rand(13, 17, dtype=torch.float64) ** 3
    sparse = propagate_boundaries(cams, boundary, logt=4)
    dense = propagate_boundaries(cams, boundary, logt=4, dense=True)
    assert torch.allclose(sparse, dense, rtol=1e-9, atol=1e-12)
    assert torch.allclose(sparse, reference_walk(cams, boundary, logt=4), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="one grid"):
        propagate_boundaries(cams, boundary[:-1])


def test_flip_average_crops_before_flipping():
    """A flip-equivariant network: the flipped image's padded output holds the flipped map top-left."""
    torch.manual_seed(0)
    m = torch.randn(3, 4)
    pair = torch.zeros(2, 1, 8, 8)
    pair[0, 0, :3, :4], pair[1, 0, :3, :4] = m, m.flip(-1)
    assert torch.allclose(flip_averaged_boundary(pair, (3, 4)), torch.sigmoid(m))
    with pytest.raises(ValueError, match="flipped"):
        flip_averaged_boundary(torch.zeros(3, 8, 8), (3, 4))


def test_semantic_labels_global_max_and_constant_background():
    walked = torch.zeros(2, 2, 3)
    walked[0, :, 0] = 1.0            # a strong class on the left
    walked[1, :, 2] = 0.2            # a weak one on the right: 0.2 of the global max < 0.25
    labels = semantic_labels(walked, np.array([4, 11]), (7, 10))
    assert labels.shape == (7, 10) and labels.dtype == np.uint8
    assert labels[0, 0] == 5 and labels[3, 9] == 0
    walked[0] = 0                    # alone, the weak class is its own maximum and wins
    assert semantic_labels(walked, np.array([4, 11]), (7, 10))[3, 9] == 12
    assert (semantic_labels(torch.zeros(2, 2, 3), np.array([4, 11]), (7, 10)) == 0).all()   # no NaN labels
    no_class = propagate_boundaries(torch.zeros(0, 2, 3), torch.zeros(2, 3))
    assert (semantic_labels(no_class, np.zeros(0, np.int64), (7, 10)) == 0).all()
    with pytest.raises(ValueError, match="stride-4"):
        semantic_labels(walked, np.array([4, 11]), (9, 10))
