"""Building blocks of the single-stage network (Araslanov & Roth, CVPR 2020): ASPP with frozen-statistics batch
norm, Global Cue Injection (GCI), the Stochastic Gate (SG) and the decoder layers.

Attribute names inside :class:`ASPP` and :class:`GlobalCueInjection` follow the reference's state dict
(``aspp.aspp1.atrous_conv``, ``fc_deep.0``, ...) so that its released weights map onto them one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ASPP_DILATIONS = (12, 24, 36)  # the reference builds ASPP for output stride 8 on every backbone
ASPP_CHANNELS = 256
SKIP_CHANNELS = 48
SG_PSI = 0.3


class FrozenStatsBatchNorm2d(nn.Module):
    """Batch norm that always normalises with its stored statistics, in training too; scale and shift train.

    The reference keeps its ASPP batch norms in eval mode for the whole run, so their statistics stay at
    mean 0, variance 1 and each acts as ``weight * x / sqrt(1 + eps) + bias``. The state dict matches
    ``nn.BatchNorm2d`` (``weight, bias, running_mean, running_var, num_batches_tracked``). It is deliberately not a
    ``_BatchNorm`` subclass, so ``SyncBatchNorm.convert_sync_batchnorm`` leaves it alone.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False,
                            momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, statistics frozen"


def reference_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU gain) conv weights; norm layers weight 1, bias 0 (as the reference)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, FrozenStatsBatchNorm2d)) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, relu: bool = True,
                 affine: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm [-> ReLU]; indices 0, 1 [, 2] as in the reference."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
              nn.BatchNorm2d(out_channels, affine=affine)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ASPPBranch(nn.Module):
    """One atrous branch: conv (no bias) -> frozen-statistics BN -> ReLU."""

    def __init__(self, in_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_channels, ASPP_CHANNELS, kernel_size, padding=padding, dilation=dilation,
                                     bias=False)
        self.bn = FrozenStatsBatchNorm2d(ASPP_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as the reference builds it (output-stride-8 dilations for every backbone).

    Branches: 1x1, 3x3 at dilations 12/24/36, and image pooling (global mean -> 1x1 conv -> BN -> ReLU -> bilinear
    upsampling, align_corners=True), each 256 channels; concatenated 1280 -> 1x1 conv -> BN -> ReLU -> Dropout(0.5).
    All batch norms keep their statistics frozen (:class:`FrozenStatsBatchNorm2d`).

    Shapes: (B, in_channels, h, w) -> (B, 256, h, w).
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.aspp1 = ASPPBranch(in_channels, 1, 1)
        self.aspp2 = ASPPBranch(in_channels, 3, ASPP_DILATIONS[0])
        self.aspp3 = ASPPBranch(in_channels, 3, ASPP_DILATIONS[1])
        self.aspp4 = ASPPBranch(in_channels, 3, ASPP_DILATIONS[2])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                             nn.Conv2d(in_channels, ASPP_CHANNELS, 1, bias=False),
                                             FrozenStatsBatchNorm2d(ASPP_CHANNELS), nn.ReLU())
        self.conv1 = nn.Conv2d(5 * ASPP_CHANNELS, ASPP_CHANNELS, 1, bias=False)
        self.bn1 = FrozenStatsBatchNorm2d(ASPP_CHANNELS)
        self.dropout = nn.Dropout(0.5)
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], dim=1)
        return self.dropout(F.relu(self.bn1(self.conv1(x))))


class GlobalCueInjection(nn.Module):
    """GCI: modulates shallow features with global cues of the deep features (AdaIN style).

    ``attrs`` = global max over space of ``fc_deep(deep)`` (B, 2 * width), split into gamma (first half) and beta
    (second half); output = ``fc_cls(relu(fc_skip(shallow) * (1 + gamma) + beta))``. ``fc_skip`` ends in a batch
    norm without affine parameters and without ReLU.

    Shapes: shallow (B, shallow_channels, h, w), deep (B, deep_channels, h, w) -> (B, width, h, w).
    """

    def __init__(self, shallow_channels: int = 256, deep_channels: int = 256, width: int = 256):
        super().__init__()
        self.fc_deep = conv_bn_relu(deep_channels, 2 * width)
        self.fc_skip = conv_bn_relu(shallow_channels, width, relu=False, affine=False)
        self.fc_cls = conv_bn_relu(width, width)
        reference_init(self)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        attrs = self.fc_deep(deep).flatten(2).amax(-1)  # (B, 2 * width)
        gamma, beta = attrs[:, :, None, None].chunk(2, dim=1)
        modulated = F.relu(self.fc_skip(shallow) * (1.0 + gamma) + beta)
        return self.fc_cls(modulated)


def stochastic_gate(deep: torch.Tensor, shallow: torch.Tensor, psi: float = SG_PSI,
                    training: bool = True) -> torch.Tensor:
    """Stochastic Gate: mix deep and shallow features.

    Training: a Bernoulli mask ``m`` (P(m = 1) = 1 - psi, drawn per element) picks
    ``(deep - psi * shallow) / max(1e-8, 1 - psi)`` where 1 and ``shallow`` where 0, so E[out] = deep.
    Evaluation: ``(1 - psi) * deep + psi * shallow`` (deterministic; not the training expectation, as the reference).

    Args:
        deep, shallow: (B, C, H, W) of the same shape.
        psi: the probability of taking the shallow features, in [0, 1].
        training: which behaviour.

    Returns:
        (B, C, H, W).
    """
    if deep.shape != shallow.shape:
        raise ValueError(f"stochastic gate: deep {tuple(deep.shape)} and shallow {tuple(shallow.shape)} differ")
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"stochastic gate: psi must lie in [0, 1], got {psi}")
    if not training:
        return (1.0 - psi) * deep + psi * shallow
    keep = torch.empty_like(deep).bernoulli_(1.0 - psi)
    shifted = (deep - psi * shallow) / max(1e-8, 1.0 - psi)
    return keep * shifted + (1.0 - keep) * shallow


class StochasticGate(nn.Module):
    """:func:`stochastic_gate` with a fixed ``psi``, following ``self.training``. No parameters.

    Unlike the reference, the mask is drawn afresh with the current input's shape each call (the reference caches
    a tensor of the first batch's shape, which breaks when the batch shape changes).
    """

    def __init__(self, psi: float = SG_PSI):
        super().__init__()
        if not 0.0 <= psi <= 1.0:
            raise ValueError(f"StochasticGate: psi must lie in [0, 1], got {psi}")
        self.psi = float(psi)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return stochastic_gate(deep, shallow, self.psi, self.training)

    def extra_repr(self) -> str:
        return f"psi={self.psi}"


def mask_head(width: int, num_outputs: int) -> nn.Sequential:
    """The reference's ``last_conv``: (3x3 conv, BN, ReLU, Dropout 0.5, 3x3 conv, BN, ReLU, Dropout 0.1, 1x1 conv
    with bias) -> ``num_outputs`` logits. Indices 0..8 as in the reference."""
    head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Dropout(0.5),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Dropout(0.1),
                         nn.Conv2d(width, num_outputs, 1))
    reference_init(head)
    return head
