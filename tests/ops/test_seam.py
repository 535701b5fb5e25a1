"""SEAM's maths: PCM seed and refinement, max_norm, ER, background rule, ECR, rvmin, inference normalisation."""
import numpy as np
import pytest
import torch

from wsss.ops.seam import (ecr_loss, er_loss, max_norm, one_hot_max, pcm_affinity, pcm_refine, pcm_seed, rvmin_loss,
                           seam_normalize_cams, with_background)

E = 1e-5


def test_pcm_seed_hand_worked():
    # channels: background, class 1, class 2 over two pixels
    cams = torch.tensor([[[[5.0, -3.0]], [[2.0, -1.0]], [[1.0, 4.0]]]], requires_grad=True)
    seed = pcm_seed(cams)
    s1 = (2 - E) / (2 + E)  # class 1 at pixel 0; pixel 1 is negative -> 0
    s2 = (4 - E) / (4 + E)  # class 2 at pixel 1; (1 - E) / (4 + E) at pixel 0 is below the max -> 0
    expected = torch.tensor([[[[1 - s1, 1 - s2]], [[s1, 0.0]], [[0.0, s2]]]])
    torch.testing.assert_close(seed, expected)
    assert not seed.requires_grad


def test_pcm_seed_keeps_ties_and_ignores_no_label():
    cams = torch.zeros(1, 4, 1, 2)
    cams[0, 1:, 0, 0] = torch.tensor([3.0, 3.0, 1.0])  # classes 1 and 2 both reach their max at pixel 0
    seed = pcm_seed(cams)
    assert seed[0, 1, 0, 0] > 0.99 and seed[0, 2, 0, 0] > 0.99 and seed[0, 3, 0, 0] == 0
    assert seed[0, 1:, 0, 1].abs().sum() == 0 and seed[0, 0, 0, 1] == 1


def _plain_pcm(seed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-pixel loops of resnet38_SEAM.PCM in float64."""
    b, k, h, w = seed.shape
    s, f = seed.double().reshape(b, k, -1), features.double().reshape(b, features.shape[1], -1)
    out = torch.zeros(b, k, h * w, dtype=torch.float64)
    for n in range(b):
        g = [f[n, :, i] / (f[n, :, i].norm() + E) for i in range(h * w)]
        for j in range(h * w):
            a = [max(0.0, float(g[i] @ g[j])) for i in range(h * w)]
            col = sum(a) + E
            for i in range(h * w):
                out[n, :, j] += s[n, :, i] * a[i] / col
    return out.reshape(b, k, h, w)


def test_pcm_refine_matches_plain_loops():
    torch.manual_seed(0)
    seed, features = torch.rand(2, 3, 3, 4), torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(pcm_refine(seed, features).double(), _plain_pcm(seed, features), rtol=1e-5,
                               atol=1e-6)
    aff = pcm_affinity(features)
    assert aff.shape == (2, 12, 12) and (aff >= 0).all()
    torch.testing.assert_close(aff.sum(1), torch.ones(2, 12), atol=1e-4, rtol=0)


def test_pcm_refine_hand_worked():
    seed = torch.tensor([[[[1.0, 0.0, 0.2]]]])
    # pixels 0 and 1 identical, pixel 2 opposite (negative cosine -> clipped): 0 and 1 average, 2 keeps its own
    features = torch.tensor([[[[1.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]]])
    out = pcm_refine(seed, features)
    torch.testing.assert_close(out, torch.tensor([[[[0.5, 0.5, 0.2]]]]), atol=1e-4, rtol=0)


def test_pcm_refine_resizes_the_seed_and_checks_shapes():
    out = pcm_refine(torch.rand(1, 2, 2, 2), torch.randn(1, 4, 3, 3))
    assert out.shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="seed must be"):
        pcm_refine(torch.rand(2, 2, 3, 3), torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="features must be"):
        pcm_affinity(torch.randn(4, 3, 3))


def test_max_norm_hand_worked_and_gradient():
    p = torch.tensor([[[[-2.0, 1.0, 3.0]], [[1.0, 2.0, 5.0]]]], requires_grad=True)
    out = max_norm(p)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, (1 - E) / (3 + E), (3 - E) / (3 + E)]))
    torch.testing.assert_close(out[0, 1, 0], torch.tensor([0.0, (1 - E) / (4 + E), (4 - E) / (4 + E)]))
    out[0, 1, 0, 1].backward()
    assert p.grad[0, 1].abs().sum() > 0 and p.grad[0, 1, 0, 0] != 0  # through the min as well
    with pytest.raises(ValueError):
        max_norm(torch.rand(3, 4, 4))


def test_er_ignores_background_and_is_l1():
    a, b = torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    a[:, 0] = 7.0  # background differences do not count
    a[0, 1, 0, 0], b[1, 2, 1, 1] = 0.8, -0.4
    assert er_loss(a, b).item() == pytest.approx((0.8 + 0.4) / (2 * 2 * 2 * 2))
    with pytest.raises(ValueError, match="one shape"):
        er_loss(a, b[:, :, :1])


def test_background_rule_and_one_hot():
    cams = torch.tensor([[[[0.9, 0.3]], [[0.2, 0.7]], [[0.6, 0.7]]]], requires_grad=True)
    bg = with_background(cams)
    torch.testing.assert_close(bg[0, :, 0], torch.tensor([[0.4, 0.3], [0.2, 0.7], [0.6, 0.7]]))
    oh = one_hot_max(cams)
    torch.testing.assert_close(oh[0, :, 0], torch.tensor([[0.9, 0.3], [0.0, 0.7], [0.6, 0.7]]))
    assert not oh.requires_grad and cams[0, 1, 0, 0] == 0.2  # the input is left unchanged
    with pytest.raises(ValueError, match="background channel"):
        one_hot_max(torch.rand(1, 1, 2, 2))


def test_ecr_top_k_mean_and_detached_target():
    target = torch.zeros(1, 2, 1, 5, requires_grad=True)
    pcm = torch.arange(10, dtype=torch.float32).reshape(1, 2, 1, 5).requires_grad_(True)
    loss = ecr_loss(target, pcm)  # k = int(2 * 1 * 5 * 0.2) = 2: errors 9 and 8
    assert loss.item() == pytest.approx(8.5)
    loss.backward()
    assert target.grad is None
    assert (pcm.grad != 0).sum() == 2 and pcm.grad[0, 1, 0, 4] == 0.5
    assert ecr_loss(target, pcm, top_ratio=0.5).item() == pytest.approx(np.mean([5, 6, 7, 8, 9]))


def test_ecr_top_k_count_at_seam_size():
    torch.manual_seed(0)
    target = torch.rand(2, 21, 134, 134)
    pcm = torch.rand(2, 21, 134, 134, requires_grad=True)
    ecr_loss(target, pcm).backward()
    assert ((pcm.grad != 0).sum(dim=(1, 2, 3)) == 75_415).all()  # int(0.2 * 21 * 134 * 134)


def test_ecr_uses_the_one_hot_target():
    target = torch.tensor([[[[0.1]], [[0.5]], [[0.9]]]])
    pcm = torch.zeros(1, 3, 1, 1)
    # one-hot target (0.1, 0, 0.9); k = int(3 * 0.2) = 0 -> refused; with ratio 1 the mean error is 1.0 / 3
    with pytest.raises(ValueError, match="selects nothing"):
        ecr_loss(target, pcm)
    assert ecr_loss(target, pcm, top_ratio=1.0).item() == pytest.approx(1.0 / 3)
    with pytest.raises(ValueError, match="top_ratio"):
        ecr_loss(target, pcm, top_ratio=0)


def test_rvmin_hand_worked():
    cams = torch.full((1, 2, 2, 4), -5.0)
    cams[0, 1] = torch.tensor([[-1.0, 0.5, 0.2, 3.0], [4.0, 5.0, 6.0, 7.0]])
    # k = 8 // 4 = 2 smallest per-pixel maxima: -1 and 0.2 -> ReLU -> 0.2 / (2 * 1)
    assert rvmin_loss(cams).item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="quarter"):
        rvmin_loss(torch.rand(1, 2, 1, 3))


@pytest.mark.parametrize("size,k", [(134, 4489), (32, 256)])
def test_rvmin_pools_a_quarter_of_the_pixels(size, k):
    torch.manual_seed(0)
    cams = (torch.rand(2, 3, size, size) + 0.1).requires_grad_(True)
    rvmin_loss(cams).backward()
    assert ((cams.grad != 0).sum(dim=(1, 2, 3)) == k).all()
    assert torch.allclose(cams.grad[cams.grad != 0], torch.tensor(1 / (k * 2)))


def _reference_normalisation(cams: np.ndarray) -> np.ndarray:
    """infer_SEAM.py:72-77 in NumPy, statement by statement."""
    s = cams.astype(np.float32).copy()
    s[s < 0] = 0
    hi = np.max(s, (1, 2), keepdims=True)
    lo = np.min(s, (1, 2), keepdims=True)
    s[s < lo + 1e-5] = 0
    return (s - lo - 1e-5) / (hi - lo + 1e-5)


def test_seam_normalisation_matches_the_reference_and_clips():
    cams = torch.tensor([[[0.5, 1.0], [2.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, 2.0], [1.0, 4.0]]])
    raw = seam_normalize_cams(cams, clip=False)
    np.testing.assert_allclose(raw.numpy(), _reference_normalisation(cams.numpy()), rtol=1e-6)
    assert raw[0, 0, 0].item() == pytest.approx(-(0.5 + E) / (2.5 + E))  # the reference's negative pixel
    assert (raw[1] == -1).all()  # an all-zero class
    out = seam_normalize_cams(cams)
    assert out.dtype == torch.float32 and out.min() == 0 and out.max() < 1
    torch.testing.assert_close(out, raw.clamp(0, 1))
    with pytest.raises(ValueError):
        seam_normalize_cams(torch.rand(1, 2, 3, 3))
