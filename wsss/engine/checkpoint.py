"""Checkpoints: ``{"model", "model_kwargs", "state_dict", "config", "epoch", "iteration", "optimizer", ...}``.

A checkpoint alone rebuilds the network (the registry name and its keyword arguments are inside). Everything is
stored as tensors and plain containers, so ``torch.load(weights_only=True)`` reads it: no pickled objects.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from wsss.errors import UserError


def rng_state() -> dict:
    """Python, NumPy and torch generator states as tensors and plain lists (weights_only-loadable)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, *, model_name: str, model_kwargs: dict, state_dict: dict, config: dict,
                    epoch: int, iteration: int, optimizer: Optional[dict] = None, extra: Optional[dict] = None,
                    with_rng: bool = True) -> None:
    """Write a checkpoint atomically (temporary name, then rename)."""
    ckpt: dict[str, Any] = {
        "model": model_name, "model_kwargs": model_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config, "epoch": epoch, "iteration": iteration,
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    if with_rng:
        ckpt["rng"] = rng_state()
    if extra:
        ckpt["extra"] = extra
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Read one of our checkpoints (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path}: not a wsss checkpoint (expected keys model, model_kwargs, state_dict)")
    return ckpt
