"""One setup function for every stage: seeds, threads, cudnn flags, logging, device. Never run at import."""
from __future__ import annotations

import logging
import os
import random
from typing import Optional

from wsss.errors import UserError

LOG = logging.getLogger("wsss")


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``wsss`` log lines on stderr, once; other libraries' loggers are left alone."""
    if not any(getattr(h, "_wsss", False) for h in LOG.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._wsss = True  # type: ignore[attr-defined]
        LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False


def resolve_device(name: Optional[str]):
    """``auto`` (or None) -> cuda when available else cpu; ``cuda`` without a GPU is a :class:`UserError`."""
    import torch

    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name.startswith("cuda") and name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(name)


def setup(seed: Optional[int] = None, device: Optional[str] = "auto", deterministic: bool = False,
          threads: Optional[int] = None):
    """Seed every generator, set threads and cudnn flags, configure logging; return the torch device."""
    import numpy as np
    import torch

    setup_logging()
    if threads is None and os.environ.get("WSSS_THREADS"):
        threads = int(os.environ["WSSS_THREADS"])
    if threads:
        torch.set_num_threads(threads)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return resolve_device(device)
