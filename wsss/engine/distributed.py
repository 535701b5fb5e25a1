"""Process-group setup for ``torchrun`` and the helpers every stage needs: rank info, id sharding, barriers.

Under ``torchrun --nproc-per-node N -m wsss ...`` the environment holds ``RANK``/``WORLD_SIZE``; we initialise
NCCL on CUDA and gloo on CPU. Without it everything runs as rank 0 of 1.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device) -> DistInfo:
    """Join the process group torchrun set up (idempotent); returns rank 0 of 1 when not launched by torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items`` (round robin, so every rank gets a similar mix of image sizes)."""
    return list(items[info.rank::info.world_size])


def any_true(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on any rank (one all-reduce; a plain bool without DDP)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def open_output(folder: Path, info: DistInfo, **kwargs):
    """Open an :class:`~wsss.artifacts.OutputDir` on rank 0 first (it decides and creates), then on the others."""
    from wsss.artifacts import OutputDir
    from wsss.errors import UserError

    out, refusal = None, None
    if info.is_main:
        try:
            out = OutputDir.open(folder, **kwargs)
        except UserError as e:
            refusal = str(e)
    if info.enabled:  # the other ranks learn of a refusal instead of waiting at the barrier for ever
        import torch.distributed as dist

        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise UserError(refusal)
    barrier()
    if not info.is_main:
        kwargs["overwrite"] = False
        out = OutputDir.open(folder, create=False, **kwargs)
    return out
