"""The training-loop settings every training stage shares; stage configs subclass :class:`TrainConfig`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from wsss.config import option, runtime


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``batch_size`` is the GLOBAL batch: under DDP each of N processes takes batch_size / N.

    ``amp`` is part of the run's identity (it changes the numerics, so an fp32 run folder is not an AMP run and a
    resume keeps the precision it started with); ``channels_last`` and ``grad_checkpoint`` are runtime options, like
    ``device``: the same maths in another memory layout or with activations recomputed, so they may change on a
    resume. (Element-wise dropout draws its mask in memory order, so under ``channels_last`` a network with such
    dropout sees other masks from the same seed: the same distribution, not the same numbers.)

    ``max_iters`` (if set) replaces ``epochs * iterations per epoch`` as the length of the run (and of the poly
    schedule). ``psa_momentum_quirk`` reproduces PSA/SEAM's SGD whose momentum is the weight decay value.
    An iteration is one update of ``accum_steps`` forward batches (deeplab-pytorch's 5 x 2); the poly rate is
    recomputed every ``poly_every`` iterations (deeplab-pytorch: 10).
    """

    out: Optional[Path] = option(None, "Output folder (the run).", required=True)
    optimizer: str = "sgd"
    lr: float = option(0.01, "Base learning rate.", type="positive")
    weight_decay: float = option(5e-4, "Weight decay.", type="non_negative")
    momentum: float = 0.9
    psa_momentum_quirk: bool = option(False, "Reproduce PSA/SEAM's SGD momentum = weight decay (the published "
                                             "recipes) or use the momentum value.")
    poly_power: float = 0.9
    poly_every: int = 1
    batch_size: int = option(16, "GLOBAL batch size (split across processes under torchrun).", type="count")
    accum_steps: int = option(1, "Forward batches per update (gradient accumulation; an update sees "
                                 "batch-size x accum-steps samples).", type="count")
    epochs: int = option(1, "Training epochs.", type="count")
    max_iters: Optional[int] = option(None, "Stop after this many iterations (replaces epochs for the LR schedule "
                                            "too).", type="count")
    seed: int = option(0, "Random seed.")
    amp: Optional[str] = option(None, "Mixed precision: bf16 autocast (CUDA or CPU), or fp16 autocast with gradient "
                                      "scaling (CUDA only).", type="choice:bf16|fp16")
    sync_bn: bool = True
    val_every: int = 1
    device: str = runtime("auto", "Where to run (auto: cuda when available).", type="choice:auto|cpu|cuda")
    workers: int = runtime(2, "DataLoader worker processes (0 = in the main process).", type="non_negative")
    log_every: int = runtime(20, "Iterations between log lines.", type="count")
    ckpt_every: int = runtime(0, "Iterations between resume checkpoints (0 = at epoch ends only).",
                              type="non_negative")
    channels_last: bool = runtime(False, "Network and batches in channels_last memory format (the same maths; "
                                         "often faster convolutions on a GPU).", type="flag")
    grad_checkpoint: bool = runtime(False, "Recompute the backbone's blocks in the backward pass instead of keeping "
                                           "their activations (same gradients; less memory, more time).", type="flag")
    resume: bool = runtime(False, "Continue the partial run in --out.", type="flag")
    overwrite: bool = runtime(False, "Replace whatever --out holds.", type="flag")

    def __post_init__(self):
        from wsss.errors import UserError

        for name in ("batch_size", "epochs", "accum_steps", "poly_every"):
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
        if self.device == "cpu":
            check_amp(self.amp, "cpu")
        if self.optimizer not in ("sgd", "adam"):
            raise UserError(f"--optimizer must be sgd or adam, got {self.optimizer!r}")


def check_amp(amp: Optional[str], device_type: str) -> None:
    """Refuse ``--amp fp16`` off CUDA (a :class:`~wsss.errors.UserError`): fp16 autocast needs gradient scaling,
    which we run on CUDA only; bf16 needs none and runs on CPU too."""
    from wsss.errors import UserError

    if amp == "fp16" and device_type != "cuda":
        raise UserError(f"--amp fp16 needs a CUDA device (fp16 training with gradient scaling); on {device_type} "
                        f"use --amp bf16 or leave --amp out")
