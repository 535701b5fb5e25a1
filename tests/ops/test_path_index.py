"""IRN's PathIndex: direction order, path points, group sizes (irn.md §4.4) and boundary -> affinity (§4.5)."""
import pytest
import torch

from wsss.ops.affinity import pair_offsets
from wsss.ops.path_index import (boundary_affinity, direction_paths, irn_directions, irn_to_psa_order, path_groups,
                                 psa_to_irn_order)

# irn.md §4.4, [verified] against the reference.
R5_ORDER = [(0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (1, -1), (1, 1), (3, 0), (0, 4), (4, 0), (1, -2), (1, 2), (2, -1),
            (2, 1), (2, -2), (2, 2), (1, -3), (1, 3), (2, -3), (2, 3), (3, -2), (3, -1), (3, 1), (3, 2), (1, -4),
            (1, 4), (3, -3), (3, 3), (4, -1), (4, 1), (2, -4), (2, 4), (4, -2), (4, 2)]
R5_GROUPS = "2:2, 3:2, 4:4, 5:2, 6:4, 7:2, 8:8, 10:6, 11:4"
R10_GROUPS = ("2:2, 3:2, 4:4, 5:2, 6:6, 7:4, 8:10, 9:2, 10:12, 11:4, 12:12, 13:2, 14:8, 15:8, 16:22, 18:16, 19:6, "
              "20:20, 21:4, 22:6")


def parse_groups(text):
    return tuple(tuple(int(v) for v in item.split(":")) for item in text.split(", "))


def test_directions_counts_order_and_groups_as_the_reference():
    assert list(irn_directions(5)) == R5_ORDER
    assert len(irn_directions(5)) == 34 and len(irn_directions(10)) == 152
    assert path_groups(5) == parse_groups(R5_GROUPS)
    assert path_groups(10) == parse_groups(R10_GROUPS)
    assert set(irn_directions(10)) == set(pair_offsets(10))   # the same set as PSA, another order
    # IRN's index buffers hold 27,934,060 entries at radius 10 on the 128x128 grid (119 x 110 sources).
    assert sum(n * length for length, n in path_groups(10)) * 119 * 110 == 27_934_060


def test_paths_hand_checked_at_radius_2():
    paths = dict(direction_paths(2))
    assert [d for d, _ in direction_paths(2)] == [(0, 1), (1, 0), (1, -1), (1, 1)]
    assert paths[(0, 1)] == ((0, 1), (0, 0))
    assert paths[(1, 0)] == ((1, 0), (0, 0))
    # bounding box y 0..1, x -1..0; all four points lie within distance 1 of the diagonal; ties keep the scan order
    assert paths[(1, -1)] == ((1, -1), (0, -1), (1, 0), (0, 0))
    assert paths[(1, 1)] == ((1, 1), (0, 1), (1, 0), (0, 0))


def test_every_path_holds_both_endpoints_and_only_points_near_the_line():
    for (dy, dx), path in direction_paths(10):
        assert path[0] == (dy, dx) and path[-1] == (0, 0) and len(set(path)) == len(path)
        sums = [abs(y) + abs(x) for y, x in path]
        assert sums == sorted(sums, reverse=True)
        assert all((dy * x - dx * y) ** 2 < dy * dy + dx * dx for y, x in path)
    # (1, 3): |x - 3y| < sqrt(10) -> x in {0,1,2,3} for y = 0 and x in {0,1,2,3} for y = 1, all 8 points
    assert sorted(dict(direction_paths(5))[(1, 3)]) == [(y, x) for y in (0, 1) for x in range(4)]
    # (3, 1): the transposed case, 8 points too; (2, 2): |x - y| < sqrt(2) -> 7 points
    assert len(dict(direction_paths(5))[(3, 1)]) == 8 and len(dict(direction_paths(5))[(2, 2)]) == 7


def test_order_permutations_are_inverse():
    to_psa, to_irn = irn_to_psa_order(10), psa_to_irn_order(10)
    irn, psa = irn_directions(10), pair_offsets(10)
    assert [irn[i] for i in to_psa.tolist()] == list(psa)
    assert [psa[i] for i in to_irn.tolist()] == list(irn)


def loop_affinity(b: torch.Tensor, radius: int) -> torch.Tensor:
    """The definition, pixel by pixel: 1 - max of b over the path of every (source, direction)."""
    batch, h, w = b.shape
    r1 = radius - 1
    paths = direction_paths(radius)
    out = torch.empty(batch, len(paths), h - r1, w - 2 * r1, dtype=b.dtype)
    for n in range(batch):
        for p, (_, path) in enumerate(paths):
            for i in range(h - r1):
                for j in range(w - 2 * r1):
                    out[n, p, i, j] = 1 - torch.stack([b[n, i + y, r1 + j + x] for y, x in path]).max()
    return out


@pytest.mark.parametrize("radius,size", [(2, (4, 5)), (3, (6, 9)), (5, (7, 11))])
def test_boundary_affinity_equals_the_plain_loop(radius, size):
    torch.manual_seed(radius)
    b = torch.rand(2, *size, dtype=torch.float64)
    fast = boundary_affinity(b, radius)
    assert fast.shape == (2, len(irn_directions(radius)), size[0] - radius + 1, size[1] - 2 * radius + 2)
    assert torch.equal(fast, loop_affinity(b, radius))


def test_boundary_affinity_gradient_matches_the_plain_max():
    torch.manual_seed(0)
    b = torch.rand(1, 5, 7, dtype=torch.float64)
    weights = torch.randn(1, 12, 3, 3, dtype=torch.float64)  # radius 3: 12 directions, 3x3 sources
    b1, b2 = b.clone().requires_grad_(), b.clone().requires_grad_()
    (boundary_affinity(b1, 3) * weights).sum().backward()
    (loop_affinity(b2, 3) * weights).sum().backward()
    assert torch.allclose(b1.grad, b2.grad) and b1.grad.abs().sum() > 0


def test_hand_worked_boundary_pixel_and_tie_rule():
    """A 3x5 grid at radius 2 (sources (0, 1..3)); one boundary pixel at (1, 2) of strength 0.9."""
    b = torch.zeros(1, 3, 5)
    b[0, 1, 2] = 0.9
    aff = boundary_affinity(b, 2)[0]      # (4, 2, 3): directions (0,1), (1,0), (1,-1), (1,1)
    assert aff.shape == (4, 2, 3)
    # source (0, 2): its (1, 0) pair ends on the boundary; (1, -1) and (1, 1) paths pass (1, 2) too
    assert aff[:, 0, 1].tolist() == pytest.approx([1.0, 0.1, 0.1, 0.1])
    # source (0, 1): (1, 1) ends on it, (1, 0) does not touch it, (0, 1) ends on (0, 2): clear
    assert aff[:, 0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])
    # source (1, 2) is the boundary pixel itself: affinity 0.1 with everyone
    assert aff[:, 1, 1].tolist() == pytest.approx([0.1] * 4)
    # constant map (every point ties): the gradient goes to the first point of each path, its far end
    flat = torch.full((1, 3, 5), 0.5, requires_grad=True)
    boundary_affinity(flat, 2)[0, 1, 0].sum().backward()    # direction (1, 0), source row 0: ends on row 1
    expected = torch.zeros(1, 3, 5)
    expected[0, 1, 1:4] = -1
    assert torch.equal(flat.grad, expected)


def test_boundary_affinity_rejects_bad_input():
    with pytest.raises(ValueError, match="B, h, w"):
        boundary_affinity(torch.rand(1, 1, 8, 8), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        boundary_affinity(torch.full((1, 8, 8), 1.5), 2)
    with pytest.raises(ValueError, match="too small"):
        boundary_affinity(torch.rand(1, 9, 18), 10)          # radius 10 needs 10 rows and 19 columns
    with pytest.raises(ValueError, match="integer"):
        boundary_affinity(torch.rand(1, 8, 8), 2.5)
    with pytest.raises(ValueError, match=">= 2"):
        irn_directions(1)
