"""Optimiser and learning-rate schedule shared by every training stage."""
from __future__ import annotations

from typing import Iterable

import torch


def poly_lr(base_lr: float, step: int, max_step: int, power: float = 0.9) -> float:
    """``base_lr * (1 - step / max_step) ** power``; from ``max_step`` on, the rate stays at its last value.

    Step counts from 0, so the first step uses the full rate (as PSA's ``PolyOptimizer``).

    Example:
        >>> round(poly_lr(0.1, 1, 10), 4)
        0.091
    """
    step = min(step, max_step - 1) if max_step > 0 else 0
    return base_lr * (1.0 - step / max_step) ** power if max_step > 0 else base_lr


def build_optimizer(param_groups: Iterable[dict], *, name: str, lr: float, weight_decay: float,
                    momentum: float, psa_momentum_quirk: bool) -> torch.optim.Optimizer:
    """SGD (or Adam) over groups that carry ``lr_mult`` and their own ``weight_decay``.

    ``psa_momentum_quirk`` reproduces PSA/SEAM, whose ``PolyOptimizer`` hands the weight decay to SGD in the
    momentum slot: SGD then runs with momentum = weight decay (5e-4, essentially none), while each group keeps
    its own weight decay. The published numbers were trained that way.
    """
    groups = []
    for g in param_groups:
        g = dict(g)
        g.setdefault("lr_mult", 1.0)
        g["initial_lr"] = lr * g["lr_mult"]
        g["lr"] = g["initial_lr"]
        g.setdefault("weight_decay", weight_decay)
        groups.append(g)
    groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise ValueError("no trainable parameters in any parameter group")
    if name == "sgd":
        m = weight_decay if psa_momentum_quirk else momentum
        return torch.optim.SGD(groups, lr=lr, momentum=m, weight_decay=0.0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=0.0)
    raise ValueError(f"unknown optimizer {name!r} (expected sgd or adam)")


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, max_step: int, power: float,
                       every: int = 1) -> float:
    """Set every group's rate for ``step`` rounded down to a multiple of ``every`` (deeplab-pytorch recomputes the
    rate every 10 updates); returns the rate of the first group (for logging)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    step = step // every * every
    for g in optimizer.param_groups:
        g["lr"] = poly_lr(g["initial_lr"], step, max_step, power)
    return optimizer.param_groups[0]["lr"]
