"""The training-loop settings every training stage shares; stage configs subclass :class:`TrainConfig`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from wsss.config import runtime


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``batch_size`` is the GLOBAL batch: under DDP each of N processes takes batch_size / N.

    ``max_iters`` (if set) replaces ``epochs * iterations per epoch`` as the length of the run (and of the poly
    schedule). ``psa_momentum_quirk`` reproduces PSA/SEAM's SGD whose momentum is the weight decay value.
    """

    out: Optional[Path] = None
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    psa_momentum_quirk: bool = False
    poly_power: float = 0.9
    batch_size: int = 16
    epochs: int = 1
    max_iters: Optional[int] = None
    seed: int = 0
    amp: Optional[str] = None
    sync_bn: bool = True
    val_every: int = 1
    device: str = runtime("auto")
    workers: int = runtime(2)
    log_every: int = runtime(20)
    ckpt_every: int = runtime(0)
    resume: bool = runtime(False)
    overwrite: bool = runtime(False)

    def __post_init__(self):
        from wsss.errors import UserError

        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_iters is not None and self.max_iters < 1:
            raise UserError(f"--max-iters must be >= 1, got {self.max_iters}")
        for name, low in (("workers", 0), ("log_every", 1), ("ckpt_every", 0), ("val_every", 0)):
            if getattr(self, name) < low:
                raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.amp not in (None, "bf16", "fp16"):
            raise UserError(f"--amp must be bf16 or fp16, got {self.amp!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"--optimizer must be sgd or adam, got {self.optimizer!r}")
