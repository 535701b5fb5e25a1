"""PAMR: hand-worked cases, agreement with a per-pixel loop formulation, bad input, the module's buffers."""
import math

import numpy as np
import pytest
import torch

from wsss.ops.pamr import DEFAULT_DILATIONS, PAMR, pamr, pamr_affinity


def plain_pamr(image: np.ndarray, masks: np.ndarray, dilations, iterations) -> np.ndarray:
    """The formula of the reference spec, one pixel and one neighbour at a time (float64)."""
    channels, height, width = image.shape
    window = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    neighbours = [o for o in window if o != (0, 0)]

    def at(array, y, x):
        return array[:, min(max(y, 0), height - 1), min(max(x, 0), width - 1)]

    affinity = np.zeros((height, width, len(neighbours) * len(dilations)))
    for y in range(height):
        for x in range(width):
            values = np.stack([at(image, y + dy * d, x + dx * d) for d in dilations for dy, dx in window])
            spread = values.std(axis=0, ddof=1)  # (C,)
            logits = []
            for d in dilations:
                for dy, dx in neighbours:
                    diff = np.abs(image[:, y, x] - at(image, y + dy * d, x + dx * d))
                    logits.append(np.mean(-diff / (1e-8 + 0.1 * spread)))
            logits = np.array(logits)
            weights = np.exp(logits - logits.max())
            affinity[y, x] = weights / weights.sum()
    for _ in range(iterations):
        out = np.zeros_like(masks)
        for y in range(height):
            for x in range(width):
                p = 0
                for d in dilations:
                    for dy, dx in neighbours:
                        out[:, y, x] += affinity[y, x, p] * at(masks, y + dy * d, x + dx * d)
                        p += 1
        masks = out
    return masks


@pytest.mark.parametrize("dilations,iterations", [((1, 2), 3), (DEFAULT_DILATIONS, 2)])
def test_matches_per_pixel_loops(dilations, iterations):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 7, 6, generator=gen, dtype=torch.float64)
    masks = torch.softmax(torch.randn(2, 4, 7, 6, generator=gen, dtype=torch.float64), 1)
    fast = pamr(image, masks, dilations, iterations)
    for b in range(2):
        plain = plain_pamr(image[b].numpy(), masks[b].numpy(), dilations, iterations)
        np.testing.assert_allclose(fast[b].numpy(), plain, rtol=1e-9, atol=1e-12)


def test_float32_matches_float64():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 12, 10, generator=gen)
    masks = torch.softmax(torch.randn(1, 21, 12, 10, generator=gen), 1)
    torch.testing.assert_close(pamr(image, masks), pamr(image.double(), masks.double()).float(),
                               rtol=1e-5, atol=1e-5)


def test_flat_image_averages_the_eight_neighbours():
    # A flat image has zero spread: every neighbour gets the same weight 1/8 with one dilation.
    image = torch.full((1, 3, 5, 5), 0.4)
    masks = torch.zeros(1, 1, 5, 5)
    masks[0, 0, 2, 2] = 1.0
    out = pamr(image, masks, dilations=(1,), iterations=1)[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1 / 8
    expected[2, 2] = 0.0
    torch.testing.assert_close(out, expected)


def test_mass_does_not_cross_a_colour_edge():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0  # left half black, right half white
    masks = torch.zeros(1, 2, 8, 8)
    masks[:, 0, :, :4] = 1.0
    masks[:, 1, :, 4:] = 1.0
    out = pamr(image, masks, iterations=10)
    torch.testing.assert_close(out, masks)


def test_affinity_rows_sum_to_one_and_shape():
    affinity = pamr_affinity(torch.rand(2, 3, 9, 11), dilations=(1, 3))
    assert affinity.shape == (2, 16, 9, 11)
    torch.testing.assert_close(affinity.sum(1), torch.ones(2, 9, 11))


def test_masks_are_resized_to_the_image():
    out = pamr(torch.rand(1, 3, 16, 16), torch.rand(1, 5, 8, 8), iterations=1)
    assert out.shape == (1, 5, 16, 16)


def test_gradient_flows_through_masks():
    masks = torch.rand(1, 3, 6, 6, requires_grad=True)
    pamr(torch.rand(1, 3, 6, 6), masks, iterations=2).sum().backward()
    assert masks.grad is not None and torch.isfinite(masks.grad).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(image=torch.rand(3, 8, 8), masks=torch.rand(1, 2, 8, 8)), "expects image"),
    (dict(image=torch.rand(2, 3, 8, 8), masks=torch.rand(1, 2, 8, 8)), "batch"),
    (dict(image=torch.rand(1, 3, 8, 8), masks=torch.rand(1, 2, 8, 8), iterations=-1), "iterations"),
    (dict(image=torch.rand(1, 3, 8, 8), masks=torch.rand(1, 2, 8, 8), dilations=()), "dilations"),
    (dict(image=torch.rand(1, 3, 8, 8), masks=torch.rand(1, 2, 8, 8), dilations=(0, 1)), "dilations"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pamr(**kwargs)


def test_module_buffers_match_the_reference_layout():
    module = PAMR()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == {"difference_kernel": (8, 1, 3, 3), "neighbour_kernel": (8, 1, 3, 3),
                      "window_kernel": (9, 1, 3, 3)}
    assert module.difference_kernel.sum() == 0 and (module.difference_kernel[:, 0, 1, 1] == 1).all()
    assert (module.neighbour_kernel[:, 0, 1, 1] == 0).all() and (module.neighbour_kernel.flatten(1).sum(1) == 1).all()
    assert module.window_kernel.flatten(1).sum(0).tolist() == [1.0] * 9
    image, masks = torch.rand(1, 3, 9, 9), torch.rand(1, 2, 9, 9)
    torch.testing.assert_close(module(image, masks), pamr(image, masks))
    assert math.isclose(module.iterations, 10) and module.dilations == (1, 2, 4, 8, 12, 24)


def test_module_refuses_changed_kernels():
    module = PAMR()
    state = module.state_dict()
    state["neighbour_kernel"] = torch.ones(8, 1, 3, 3)
    with pytest.raises(ValueError, match="neighbour_kernel"):
        module.load_state_dict(state)
