"""WS-FCN modules (spec seam_wsfcn.md B3-B5): FCA's separable branches against a dense dilated conv, the dead taps
on a 41x41 map, the attentions by hand, FCA against its plain formulation, the flow warp against a plain bilinear
gather, AlignModule and SF2."""
import pytest
import torch
import torch.nn.functional as F

from wsss.models.wsfcn_modules import FCA, SF2, AlignModule, ChannelAttention, SeparableBranch, SpatialAttention, \
    flow_warp

EPS = 1e-5


def _frozen_bn(bn, x: torch.Tensor) -> torch.Tensor:
    """A batch norm at its initial statistics (mean 0, variance 1): an affine map."""
    return x * (bn.weight / (1 + bn.eps) ** 0.5)[None, :, None, None] + bn.bias[None, :, None, None]


def _randomise_norms(module: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1] in ("weight", "bias") and p.ndim == 1:
                p.copy_(torch.randn_like(p))


# ------------------------------------------------------------------------------------------------------------ FCA
@pytest.mark.parametrize("kernel_size,dilation", [(1, 1), (3, 2), (5, 3)])
def test_separable_branch_equals_a_dense_dilated_conv(kernel_size, dilation):
    torch.manual_seed(0)
    branch = SeparableBranch(3, 4, kernel_size, dilation)
    x = torch.randn(2, 3, 9, 11)
    w11, w12 = branch.conv1_1.weight[..., 0], branch.conv1_2.weight[:, :, 0]  # (m, i, a), (o, m, b)
    w21, w22 = branch.conv2_1.weight[:, :, 0], branch.conv2_2.weight[..., 0]  # (m, i, b), (o, m, a)
    dense = torch.einsum("omb,mia->oiab", w12, w11) + torch.einsum("oma,mib->oiab", w22, w21)
    expected = F.conv2d(x, dense, padding=dilation * (kernel_size - 1) // 2, dilation=dilation)
    torch.testing.assert_close(branch(x), expected, atol=1e-5, rtol=1e-4)


def test_fca_branch_geometry_is_the_reference():
    fca = FCA(8)
    for i, (ks, pad, dilation) in enumerate([(1, 0, 1), (3, 12, 12), (5, 48, 24), (7, 108, 36)], start=1):
        branch = getattr(fca, f"fca{i}")
        assert branch.conv1_1.kernel_size == (ks, 1) and branch.conv1_1.padding == (pad, 0)
        assert branch.conv2_1.kernel_size == (1, ks) and branch.conv2_1.padding == (0, pad)
        assert branch.conv1_2.dilation == (dilation, dilation) and branch.conv1_1.bias is None
    assert sum(isinstance(m, ChannelAttention) for m in fca.modules()) == 1  # one attention shared by 4 branches


@pytest.mark.parametrize("kernel_size,dilation,dead", [(5, 24, (0, 4)), (7, 36, (0, 1, 5, 6))])
def test_dead_taps_on_a_41_map_get_exactly_zero_gradient(kernel_size, dilation, dead):
    """fca3's taps at +-48 and fca4's at +-72, +-108 only see zero padding on the 41x41 training map (B3)."""
    torch.manual_seed(0)
    for size, expect_dead in ((41, dead), (128, ())):
        branch = SeparableBranch(2, 2, kernel_size, dilation)
        (branch(torch.randn(1, 2, size, size)) * torch.randn(1, 2, size, size)).sum().backward()
        taps = {"conv1_1": branch.conv1_1.weight.grad[..., 0], "conv2_2": branch.conv2_2.weight.grad[..., 0],
                "conv1_2": branch.conv1_2.weight.grad[:, :, 0], "conv2_1": branch.conv2_1.weight.grad[:, :, 0]}
        for name, grad in taps.items():
            per_tap = grad.abs().sum((0, 1))
            for k in range(kernel_size):
                assert (per_tap[k] == 0) == (k in expect_dead), (size, name, k)


def test_channel_attention_hand_value():
    ca = ChannelAttention(1)
    with torch.no_grad():
        for p in ca.parameters():
            p.fill_(1.0)
    z = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(ca(z), torch.sigmoid(torch.tensor(2.0 + 3.0)).view(1, 1, 1, 1))
    torch.testing.assert_close(ca(-z), torch.full((1, 1, 1, 1), 0.5))  # both MLP inputs negative -> ReLU -> 0


def test_spatial_attention_hand_value():
    sa = SpatialAttention()
    with torch.no_grad():
        sa.conv.weight.zero_()
        sa.conv.weight[0, 0, 1, 1], sa.conv.weight[0, 1, 1, 1] = 1.0, 2.0  # centre taps of [mean; max]
    x = torch.tensor([1.0, 3.0, -1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(sa(x), torch.sigmoid(torch.tensor(1.0 + 2.0 * 3.0)).view(1, 1, 1, 1))


def test_fca_matches_its_plain_formulation():
    torch.manual_seed(0)
    fca = FCA(3).eval()
    _randomise_norms(fca)
    x = torch.randn(2, 3, 6, 7)
    branches = [getattr(fca, f"fca{i}")(x) for i in range(1, 5)]

    def mlp(v):
        return F.conv2d(F.relu(F.conv2d(v, fca.ca.sharedMLP[0].weight)), fca.ca.sharedMLP[2].weight)

    branches = [z * torch.sigmoid(mlp(z.mean((2, 3), keepdim=True)) + mlp(z.amax((2, 3), keepdim=True)))
                for z in branches]
    pooled = F.relu(_frozen_bn(fca.global_avg_pool[2], F.conv2d(x.mean((2, 3), keepdim=True),
                                                               fca.global_avg_pool[1].weight)))
    y = _frozen_bn(fca.bn1, F.conv2d(torch.cat(branches + [pooled.expand(-1, -1, 6, 7)], 1), fca.conv1.weight))
    attention = torch.sigmoid(F.conv2d(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1),
                                       fca.sa.conv.weight, padding=1))
    out = fca(x)
    torch.testing.assert_close(out, y * attention + y, atol=1e-5, rtol=1e-4)
    assert (out < 0).any()  # no ReLU after the fusion


def test_fca_training_keeps_bn_statistics_and_drops_elementwise():
    torch.manual_seed(0)
    fca = FCA(3).train()
    out = fca(torch.randn(4, 3, 8, 8))
    assert out.shape == (4, 256, 8, 8)
    assert abs((out == 0).float().mean().item() - 0.5) < 0.05  # Dropout(0.5), element-wise
    for name, buffer in fca.named_buffers():
        if name.endswith("running_mean"):
            assert buffer.abs().sum() == 0, name


# ----------------------------------------------------------------------------------------------------- flow warp
def _plain_warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Loop version: bilinear gather at base grid + flow / (W, H), zero outside, corners aligned."""
    b, c, h, w = features.shape
    height, width = flow.shape[-2:]
    out = torch.zeros(b, c, height, width, dtype=torch.float64)
    for n in range(b):
        for i in range(height):
            for j in range(width):
                gx = -1 + 2 * j / max(width - 1, 1) + flow[n, 0, i, j].item() / width
                gy = -1 + 2 * i / max(height - 1, 1) + flow[n, 1, i, j].item() / height
                px, py = (gx + 1) / 2 * (w - 1), (gy + 1) / 2 * (h - 1)
                x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                    if 0 <= yy < h and 0 <= xx < w:
                        out[n, :, i, j] += weight * features[n, :, yy, xx].double()
    return out.float()


def test_flow_warp_matches_a_plain_bilinear_gather():
    torch.manual_seed(0)
    features, flow = torch.randn(2, 3, 4, 5), 3 * torch.randn(2, 2, 6, 7)
    torch.testing.assert_close(flow_warp(features, flow), _plain_warp(features, flow), atol=1e-5, rtol=1e-4)


def test_zero_flow_is_plain_upsampling_and_a_known_shift():
    features = torch.randn(2, 3, 5, 6)
    upsampled = F.interpolate(features, size=(9, 11), mode="bilinear", align_corners=True)
    torch.testing.assert_close(flow_warp(features, torch.zeros(2, 2, 9, 11)), upsampled)
    same = torch.arange(25.0).view(1, 1, 5, 5)
    flow = torch.zeros(1, 2, 5, 5)
    flow[:, 0] = 5 * 2 / 4  # one pixel = 2 / (w - 1) in normalised x; the flow is divided by W = 5
    expected = torch.cat([same[..., 1:], torch.zeros(1, 1, 5, 1)], dim=-1)
    torch.testing.assert_close(flow_warp(same, flow), expected)


def test_flow_warp_bad_input():
    with pytest.raises(ValueError, match="flow_warp"):
        flow_warp(torch.randn(1, 3, 4, 4), torch.zeros(1, 3, 8, 8))


def test_align_module_shapes_zero_flow_and_input_order():
    torch.manual_seed(0)
    with torch.device("meta"):
        big = AlignModule(256, 256, 128)
    assert big(torch.empty(2, 256, 81, 81, device="meta"), torch.empty(2, 256, 41, 41, device="meta")).shape == \
        (2, 256, 81, 81)
    align = AlignModule(4, 6, 3)
    low, high = torch.randn(1, 4, 9, 9), torch.randn(1, 6, 5, 5)
    assert align.flow(low, high).shape == (1, 2, 9, 9)
    with torch.no_grad():
        align.flow_make.weight[:, 3:] = 0  # the second half of the concatenation is the low branch
    torch.testing.assert_close(align.flow(low, high), align.flow(torch.randn_like(low), high))
    with torch.no_grad():
        align.flow_make.weight.zero_()
    torch.testing.assert_close(align(low, high), F.interpolate(high, size=(9, 9), mode="bilinear",
                                                               align_corners=True))


# ----------------------------------------------------------------------------------------------------------- SF2
def test_sf2_matches_its_plain_formulation_and_resizes_down():
    torch.manual_seed(0)
    sf2 = SF2(3, 5, 4).eval()
    assert all(m.bias.abs().sum() == 0 for m in sf2.modules() if isinstance(m, torch.nn.Conv2d))
    _randomise_norms(sf2)
    left, down = torch.randn(2, 3, 6, 6), torch.randn(2, 5, 6, 6)

    def cbr(name, x):
        conv = getattr(sf2, f"conv{name}")
        return F.relu(_frozen_bn(getattr(sf2, f"bn{name}"), F.conv2d(x, conv.weight, conv.bias, padding=1)))

    h1, v1 = cbr("1h", left), cbr("1v", down)
    fuse = cbr("2h", h1) * cbr("2v", v1)
    h4, v4 = sf2(left, down)
    torch.testing.assert_close(h4, cbr("4h", cbr("3h", fuse) + h1))
    torch.testing.assert_close(v4, cbr("4v", cbr("3v", fuse) + v1))
    small = torch.randn(2, 5, 3, 3)
    resized = F.interpolate(small, size=(6, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(sf2(left, small)[1], sf2(left, resized)[1])


def test_sf2_batch_norms_train_with_batch_statistics():
    sf2 = SF2(3, 3, 4).train()
    sf2(torch.randn(2, 3, 5, 5) + 3, torch.randn(2, 3, 5, 5))
    assert all(getattr(sf2, f"bn{i}{s}").running_mean.abs().sum() > 0 for i in range(1, 5) for s in "hv")
