"""The one training loop. A stage hands it a *train module* and a dataset; nothing else differs between methods.

A train module is an ``nn.Module`` with
- ``forward(batch: dict) -> dict[str, Tensor]`` returning ``{"loss": scalar, <named terms>...}``;
- ``network``: the registered network whose weights are checkpointed;
- ``param_groups(lr, weight_decay) -> list[dict]`` (groups may carry ``lr_mult`` and ``weight_decay``);
- optionally ``set_epoch(epoch)`` (warm-up rules) and ``visuals(batch) -> dict[str, (3, H, W) uint8 tensor]``.

Hooks (LR schedule, checkpointing, logging, and a stage's own, e.g. validation) run around each step; see
:mod:`wsss.engine.hooks`. Their state (e.g. the best validation score) is saved in ``last.pt`` and restored on
resume.

Speed options (``benchmarks/train_speed.py`` measures them): ``--amp bf16`` (autocast, CUDA or CPU) or ``fp16``
(autocast + ``GradScaler``, whose state goes into ``last.pt``; CUDA only); ``--channels-last`` (network and image
batches in that layout); ``--grad-checkpoint`` (:func:`wsss.models.backbone.enable_grad_checkpoint`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from wsss.engine import hooks as H
from wsss.engine.checkpoint import check_classes, load_checkpoint, save_checkpoint, set_rng_state
from wsss.engine.config import TrainConfig, check_amp
from wsss.engine.distributed import DistInfo, any_true
from wsss.engine.sampling import EpochBatchSampler, SeededDataset
from wsss.engine.schedule import build_optimizer
from wsss.errors import UserError
from wsss.models.backbone import enable_grad_checkpoint
from wsss.process import LOG

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(amp: Optional[str], device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``--amp`` on ``device`` (None = fp32); fp16 off CUDA and bf16 on a GPU without it are
    :class:`UserError`."""
    check_amp(amp, device.type)
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use --amp fp16")
    return AMP_DTYPES.get(amp or "")


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """The batch's tensors on ``device``; with ``channels_last``, the 4-D floating ones (images) in that layout."""
    def move(v: torch.Tensor) -> torch.Tensor:
        if channels_last and v.dim() == 4 and v.is_floating_point():
            return v.to(device, memory_format=torch.channels_last, non_blocking=True)
        return v.to(device, non_blocking=True)

    return {k: move(v) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclasses.dataclass
class TrainState:
    """What the hooks can read: progress counters and the latest losses."""

    iteration: int = 0
    epoch: int = 0
    max_iters: int = 0
    iters_per_epoch: int = 0
    lr: float = 0.0
    losses: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)


class Trainer:
    """Runs ``cfg`` on ``module`` over ``dataset``; checkpoints go to ``run_dir``."""

    def __init__(self, cfg: TrainConfig, module: torch.nn.Module, dataset: Dataset, *, run_dir: Path,
                 model_name: str, model_kwargs: dict, config_dict: dict, device: torch.device, dist: DistInfo,
                 hooks: Sequence[H.Hook] = (), collate_fn=None, classes: Optional[Sequence[str]] = None):
        self.amp_dtype = autocast_dtype(cfg.amp, device)
        self.cfg, self.module, self.device, self.dist = cfg, module.to(device), device, dist
        if cfg.channels_last:
            module.to(memory_format=torch.channels_last)
        if cfg.grad_checkpoint and not enable_grad_checkpoint(module):
            LOG.warning("--grad-checkpoint: %s has no backbone that supports it; training without",
                        type(getattr(module, "network", module)).__name__)
        self.run_dir, self.model_name, self.model_kwargs = Path(run_dir), model_name, model_kwargs
        self.config_dict = config_dict
        self.classes = None if classes is None else [str(c) for c in classes]  # recorded in every checkpoint
        self.dataset = SeededDataset(dataset, cfg.seed)
        try:
            self.sampler = EpochBatchSampler(len(dataset), cfg.batch_size, dist.rank, dist.world_size, cfg.seed)
        except ValueError as e:
            raise UserError(f"--batch-size {cfg.batch_size}: {e}") from None
        # Pinned host memory only feeds a GPU; workers persist across epochs (the sampler hands them the epoch).
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=cfg.workers,
                                 collate_fn=collate_fn, pin_memory=device.type == "cuda",
                                 persistent_workers=cfg.workers > 0,
                                 generator=torch.Generator().manual_seed(cfg.seed))  # not the global RNG
        self.state = TrainState(iters_per_epoch=self.sampler.batches_per_epoch // cfg.accum_steps)
        if self.state.iters_per_epoch < 1:
            raise UserError(f"--accum-steps {cfg.accum_steps}: {len(dataset)} training samples are fewer than one "
                            f"update of {cfg.accum_steps} batches of {cfg.batch_size}")
        self.state.max_iters = cfg.max_iters or cfg.epochs * self.state.iters_per_epoch
        self.optimizer = build_optimizer(module.param_groups(cfg.lr, cfg.weight_decay), name=cfg.optimizer,
                                         lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                         psa_momentum_quirk=cfg.psa_momentum_quirk)
        self.model = self._wrap(module)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.hooks = H.build_hooks(hooks)
        for h in self.hooks:
            h.trainer = self

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.cfg.sync_bn and self.device.type == "cuda":
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        elif any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules()):
            LOG.warning("batch-norm statistics are per process on %s (SyncBatchNorm needs CUDA)", self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids, find_unused_parameters=getattr(module, "find_unused_parameters", False))

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save(self, name: str, with_optimizer: bool = True, extra: Optional[dict] = None) -> Path:
        path = self.run_dir / name
        if self.dist.is_main:
            save_checkpoint(path, model_name=self.model_name, model_kwargs=self.model_kwargs,
                            state_dict=self.module.network.state_dict(), config=self.config_dict,
                            epoch=self.state.epoch, iteration=self.state.iteration,
                            optimizer=self.optimizer.state_dict() if with_optimizer else None,
                            extra={**(extra or {}), **(self._resume_state() if with_optimizer else {})},
                            with_rng=with_optimizer, classes=self.classes)
        return path

    def _resume_state(self) -> dict:
        """What a resume needs beyond weights, optimizer and RNG: hook states and the AMP scaler."""
        state = {"hooks": [h.state_dict() for h in self.hooks]}
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt["model"] != self.model_name:
            raise UserError(f"{path}: checkpoint of model {ckpt['model']!r}, this run trains {self.model_name!r}")
        if self.classes is not None:
            check_classes(path, self.classes, self.config_dict.get("data"), option="resume:")
        self.module.network.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        extra = ckpt.get("extra", {})
        if extra.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(extra["grad_scaler"])
        for hook, state in zip(self.hooks, extra.get("hooks", ())):
            hook.load_state_dict(state)
        self.state.iteration = int(ckpt["iteration"])
        LOG.info("resumed from %s at iteration %d", path, self.state.iteration)

    # -------------------------------------------------------------------------------------------------- loop
    def _to_device(self, batch: dict) -> dict:
        return to_device(batch, self.device, self.cfg.channels_last)

    def _forward(self, batch: dict) -> dict:
        """The module's losses on one forward batch; a non-finite loss stops the run (UserError)."""
        batch = self._to_device(batch)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.model(batch)
        loss = losses["loss"]
        if any_true(not bool(torch.isfinite(loss.detach()).all()), self.device):
            last = self.run_dir / "last.pt"
            kept = f"; the last good checkpoint is {last}" if last.exists() else "; no checkpoint was written yet"
            raise UserError(f"loss is {loss.item()} at iteration {self.state.iteration} "
                            f"(epoch {self.state.epoch}): training stopped{kept}")
        return losses

    def run_step(self, batch) -> dict:
        """One update from ``batch`` (a dict) or a list of ``accum_steps`` forward batches: each loss is divided by
        their number and the gradients add up (under DDP they are averaged across processes on the last one only).

        Returns the logged scalars, averaged over the forward batches.
        """
        micro = batch if isinstance(batch, list) else [batch]
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict = {}
        for i, one in enumerate(micro):
            defer = self.dist.enabled and i < len(micro) - 1
            with self.model.no_sync() if defer else contextlib.nullcontext():
                losses = self._forward(one)
                loss = losses["loss"] if len(micro) == 1 else losses["loss"] / len(micro)
                self.scaler.scale(loss).backward()
            for k, v in losses.items():
                if torch.is_tensor(v) and v.numel() == 1:
                    logged[k] = logged.get(k, 0.0) + float(v.detach()) / len(micro)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return logged

    def train(self) -> Path:
        st = self.state
        self.module.train()
        for h in self.hooks:
            h.before_train()
        while st.iteration < st.max_iters:
            st.epoch, start = divmod(st.iteration, st.iters_per_epoch)
            self.sampler.set_epoch(st.epoch, start * self.cfg.accum_steps)
            self.dataset.epoch = st.epoch
            if hasattr(self.module, "set_epoch"):
                self.module.set_epoch(st.epoch)
            group: list = []
            for batch in self.loader:
                group.append(batch)
                if len(group) < self.cfg.accum_steps:
                    continue
                for h in self.hooks:
                    h.before_step()
                st.losses = self.run_step(group if len(group) > 1 else batch)
                group = []
                st.iteration += 1
                for h in self.hooks:
                    h.after_step(batch)
                if st.iteration >= st.max_iters:
                    break
            if st.iteration % st.iters_per_epoch == 0 or st.iteration >= st.max_iters:
                for h in self.hooks:
                    h.after_epoch()
        for h in self.hooks:
            h.after_train()
        return self.run_dir / "final.pt"

