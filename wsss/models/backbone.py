"""The one interface every backbone has.

A backbone maps a normalised image batch (B, 3, H, W) to a dict of named feature maps. The names are the taps
the method networks use, the same on every backbone:

========  ======================================================  =======
name      what                                                    stride
========  ======================================================  =======
``conv3`` shallow features (single-stage / WS-FCN skip, PAMR)       4
``conv4`` mid features (AffinityNet ``f8_3``)                      8
``conv5`` deep features (AffinityNet ``f8_4``)                     8 (16 for ResNets at output stride 16)
``conv6`` final features (CAM head, AffinityNet ``f8_5``)          output stride
``out``   the same tensor as ``conv6``                              output stride
========  ======================================================  =======

Each backbone's docstring says exactly which activation each tap is. ``out_channels`` and ``strides`` give the
channels and strides per name; ``output_stride`` is ``strides["out"]``.

Freezing, as the references do in training mode: ``freeze_bn`` keeps every BatchNorm in eval mode (ImageNet
running statistics) with its affine parameters frozen; ``frozen`` names the early blocks whose parameters get
``requires_grad=False``. Frozen parameters are in no learning-rate group. ``None`` selects the backbone's
reference default.

Gradient checkpointing (``--grad-checkpoint`` of the training commands, :func:`enable_grad_checkpoint`): a backbone
with ``checkpoint_blocks`` runs each residual block through :meth:`Backbone.run_block`, which, while gradients are
recorded, keeps only the block's input and recomputes its inside during the backward pass
(``torch.utils.checkpoint`` without re-entrance). Dropout draws the same masks again (the RNG state is restored) and
training-mode BatchNorm does not count the recomputation in its running statistics, so gradients and buffers are
those of the plain forward; only memory and time change.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from wsss.errors import UserError
from wsss.models.normalization import Normalization, normalization_for
from wsss.models.param_groups import PSA_LR_MULTS, param_groups

TAPS = ("conv3", "conv4", "conv5", "conv6", "out")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


class Backbone(nn.Module):
    """Base class: named feature taps, channels, strides, freezing and learning-rate groups.

    Subclasses set the class attributes, build their layers, then call :meth:`_apply_freezing` at the end of
    ``__init__``, and implement ``forward(x) -> dict[str, Tensor]`` with the keys of :data:`TAPS`.

    Attributes:
        name: registry name (also selects the input :class:`Normalization`).
        out_channels: channels per tap.
        strides: stride per tap, relative to the input.
        lr_mults: learning-rate multipliers (pretrained w, pretrained b, new w, new b) of the reference.
        default_frozen: early blocks the references freeze.
        default_freeze_bn: whether the references freeze BatchNorm.
        init_drop: keys of the ImageNet file that are dropped on purpose (e.g. the 1000-way classifier).
    """

    name: str = ""
    out_channels: dict
    strides: dict
    lr_mults: tuple = PSA_LR_MULTS
    default_frozen: tuple = ()
    default_freeze_bn: bool = True
    init_drop: tuple = ()
    checkpoint_blocks: bool = False
    grad_checkpoint: bool = False

    def __init__(self, *, freeze_bn: Optional[bool] = None, frozen: Optional[Sequence[str]] = None):
        super().__init__()
        self.freeze_bn = self.default_freeze_bn if freeze_bn is None else bool(freeze_bn)
        self.frozen = tuple(self.default_frozen if frozen is None else frozen)

    @property
    def output_stride(self) -> int:
        """Stride of the final features ``out``."""
        return self.strides["out"]

    @property
    def normalization(self) -> Normalization:
        """The input convention this backbone's weights expect."""
        return normalization_for(self.name)

    def _apply_freezing(self) -> None:
        """Set ``requires_grad=False`` on frozen blocks (and on BN when ``freeze_bn``); BN to eval mode."""
        children = dict(self.named_modules())
        unknown = [n for n in self.frozen if n not in children or n == ""]
        if unknown:
            raise UserError(f"backbone {self.name}: cannot freeze {unknown}: no such block "
                            f"(top-level blocks: {', '.join(n for n, _ in self.named_children())})")
        for block in self.frozen:
            children[block].requires_grad_(False)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, _NORMS):
                    m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        """``nn.Module.train``, then every BatchNorm back to eval mode when ``freeze_bn``."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, _NORMS):
                    m.eval()
        return self

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Learning-rate groups of the backbone alone (every parameter counts as pretrained)."""
        return param_groups(self, lr, weight_decay, mults=self.lr_mults)

    def run_block(self, block: nn.Module, *inputs: torch.Tensor):
        """``block(*inputs)``; with ``grad_checkpoint`` set and gradients recorded, checkpointed: its activations are
        recomputed in the backward pass instead of being kept (see the module docstring)."""
        if not (self.grad_checkpoint and torch.is_grad_enabled()):
            return block(*inputs)
        return checkpoint(block, *inputs, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), kept_norm_statistics(block)))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear ``ValueError`` unless ``x`` is a (B, 3, H, W) floating tensor."""
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a float (B, 3, H, W) image batch, got "
                             f"{tuple(x.shape)} {x.dtype}")


@contextlib.contextmanager
def kept_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Run the body, then put back the running statistics of ``module``'s training-mode BatchNorms (a checkpoint's
    recomputation must not update them a second time)."""
    saved = [(m, [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)])
             for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def enable_grad_checkpoint(module: nn.Module, enabled: bool = True) -> list[str]:
    """Set gradient checkpointing on every backbone inside ``module`` that supports it; returns their names (empty
    when none does: the network then trains as before)."""
    names = []
    for m in module.modules():
        if isinstance(m, Backbone) and m.checkpoint_blocks:
            m.grad_checkpoint = bool(enabled)
            names.append(m.name)
    return names
