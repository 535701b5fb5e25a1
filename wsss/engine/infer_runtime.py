"""The runtime side of the per-image loop (:mod:`wsss.engine.inference`): the ``load`` step of the next ids in
DataLoader worker processes (``--workers``), the network in channels-last memory format (``--channels-last``) and
its forward under bf16 autocast (``--amp``, CUDA only). None of them changes what a stage computes beyond float
rounding: workers give the same items bit for bit, channels-last within 1e-5 (fp32), bf16 by its rounding.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator

from wsss.errors import UserError

if TYPE_CHECKING:
    from wsss.engine.inference import Context, InferenceStage


class _Refused:
    """A :class:`UserError` raised by ``load`` in a worker process, carried back as a value (DataLoader would
    re-raise it with the worker's traceback in its message)."""

    def __init__(self, message: str):
        self.message = message


class _Loads:
    """``stage.load(ctx, id)`` per index of ``ids``: the map-style dataset of the worker processes."""

    def __init__(self, stage: "InferenceStage", ctx: "Context", ids: list):
        self.stage, self.ctx, self.ids = stage, ctx, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.stage.load(self.ctx, self.ids[index])
        except UserError as e:
            return _Refused(str(e))


def _as_loaded(item: Any) -> Any:
    """The DataLoader's ``collate_fn``: the item exactly as ``load`` returned it (no conversion to tensors)."""
    return item


def loaded_items(stage: "InferenceStage", ctx: "Context", todo: list) -> Iterator[tuple[str, Any]]:
    """``(id, stage.load(ctx without network, id))`` for every id of ``todo``, in order.

    With ``ctx.cfg.workers`` > 0 the loads run ahead in that many DataLoader worker processes (tensors in pinned
    memory on CUDA); with 0, each load runs in this process when its item is asked for.
    """
    load_ctx = dataclasses.replace(ctx, network=None)
    workers = int(getattr(ctx.cfg, "workers", 0) or 0)
    if workers == 0 or not todo:
        for image_id in todo:
            yield image_id, stage.load(load_ctx, image_id)
        return
    import torch

    loader = torch.utils.data.DataLoader(_Loads(stage, load_ctx, todo), batch_size=None, num_workers=workers,
                                         collate_fn=_as_loaded, pin_memory=ctx.device.type == "cuda")
    for image_id, item in zip(todo, loader):
        if isinstance(item, _Refused):
            raise UserError(item.message)
        yield image_id, item


def _as_float(out: Any) -> Any:
    """Floating tensors of a network's output (a tensor, or a dict, list or tuple of them) as float32."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {key: _as_float(value) for key, value in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_as_float(value) for value in out)
    return out


def bf16_autocast(method: Callable) -> Callable:
    """``method`` run under CUDA bf16 autocast, its floating outputs returned as float32 (so that what a stage does
    with them, fusion, random walks, stays in fp32)."""
    import torch

    @functools.wraps(method)
    def run(*args, **kwargs):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = method(*args, **kwargs)
        return _as_float(out)

    return run


def check_amp(cfg: Any, device: Any) -> None:
    """``--amp`` anywhere but on CUDA is a :class:`UserError`."""
    if getattr(cfg, "amp", False) and device.type != "cuda":
        raise UserError(f"--amp: bf16 autocast needs a CUDA device, this run is on {device.type} (drop --amp)")


def prepare_network(network: Any, cfg: Any, device: Any) -> Any:
    """The network on ``device`` in eval mode; in channels-last memory format with ``--channels-last``; with
    ``--amp``, its ``forward`` (and ``forward_cam``) under bf16 autocast (:func:`bf16_autocast`)."""
    import torch

    network = network.to(device).eval()
    if getattr(cfg, "channels_last", False):
        network = network.to(memory_format=torch.channels_last)
    if getattr(cfg, "amp", False):
        for name in ("forward", "forward_cam"):
            if hasattr(network, name):
                setattr(network, name, bf16_autocast(getattr(network, name)))
    return network
