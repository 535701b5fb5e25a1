"""Checkpoints: ``{"model", "model_kwargs", "state_dict", "config", "classes", "epoch", "iteration", "optimizer",
...}``.

A checkpoint alone rebuilds the network (the registry name and its keyword arguments are inside). Everything is
stored as tensors and plain containers, so ``torch.load(weights_only=True)`` reads it: no pickled objects.
``classes`` are the foreground class names of the dataset it was trained on (label k + 1 is ``classes[k]``); a
stage that runs the network on a dataset refuses one with another list (:func:`check_classes`). Checkpoints
written before the names were recorded have no ``classes`` and are not checked.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional, Sequence

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
                    with_rng: bool = True, classes: Optional[Sequence[str]] = None) -> None:
    """Write a checkpoint atomically (temporary name, then rename); ``classes``: the training data's foreground
    class names, recorded when given."""
    ckpt: dict[str, Any] = {
        "model": model_name, "model_kwargs": model_kwargs,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},  # whatever the layout
        "config": config, "epoch": epoch, "iteration": iteration,
    }
    if classes is not None:
        ckpt["classes"] = [str(c) for c in classes]
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


SHOW_CLASSES = 4  # class names shown per list in a mismatch message


def recorded_classes(path: Path) -> Optional[list[str]]:
    """The class names one of our checkpoints records, or None (no such record, or not our checkpoint: the
    weights loader reports unreadable files). The file is memory-mapped, so its tensors are not read."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy or foreign formats: nothing recorded here
        return None
    names = obj.get("classes") if isinstance(obj, dict) and "state_dict" in obj else None
    return [str(c) for c in names] if isinstance(names, (list, tuple)) else None


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOW_CLASSES]) + (", ..." if len(names) > SHOW_CLASSES else "")
    return f"{len(names)} classes ({shown})"


def _first_difference(trained: Sequence[str], dataset: Sequence[str]) -> str:
    for label, (a, b) in enumerate(zip(trained, dataset), start=1):
        if a != b:
            return f"label {label} is '{a}' in the checkpoint, '{b}' in the dataset"
    label = min(len(trained), len(dataset)) + 1
    if len(trained) > len(dataset):
        return f"labels from {label} on ('{trained[label - 1]}', ...) are only in the checkpoint"
    return f"labels from {label} on ('{dataset[label - 1]}', ...) are only in the dataset"


def check_classes(path: Path, dataset: Sequence[str], data: Path, option: str = "--weights") -> None:
    """Refuse a checkpoint trained on another class list than ``dataset`` (the ``--data`` folder's, in label
    order 1..C); checkpoints without a record pass.

    Raises:
        UserError: one line with both lists (count, first names) and the first label where they differ.
    """
    trained = recorded_classes(path)
    if trained is None or list(trained) == list(dataset):
        return
    raise UserError(f"{option} {path}: trained on {_listing(trained)}, but --data {data} has "
                    f"{_listing(list(dataset))}; {_first_difference(trained, list(dataset))} (use a checkpoint "
                    f"trained on this dataset's classes)")
