"""``fit()``: what every training stage's ``run()`` calls. Opens the run folder, resumes, trains, completes."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from wsss.artifacts import Manifest, read_manifest
from wsss.config import identity, to_dict
from wsss.engine.config import TrainConfig
from wsss.engine.distributed import barrier, init_distributed, open_output
from wsss.engine.hooks import Validation
from wsss.engine.trainer import Trainer, autocast_dtype
from wsss.errors import UserError
from wsss.process import LOG, setup


def fit(cfg: TrainConfig, *, stage: str, build: Callable[[], tuple], model_name: str, model_kwargs: dict,
        split: Optional[str] = None, inputs: Optional[dict] = None,
        validate: Optional[Callable] = None, collate_fn=None, classes: Optional[Sequence[str]] = None) -> Manifest:
    """Train into ``cfg.out`` and return its ``checkpoint`` manifest.

    Args:
        build: called once the generators are seeded, before the run folder is touched; returns
            ``(train_module, dataset)`` or ``(train_module, dataset, hooks)`` with the stage's own hooks.
        validate: ``network -> dict`` of metrics (``score`` selects the best checkpoint), run on rank 0; the
            same as a :class:`~wsss.engine.hooks.Validation` hook.
        classes: the dataset's foreground class names, recorded in every checkpoint (inference stages refuse a
            dataset with another list).

    A complete run folder of the same config is left alone; a partial one resumes from its ``last.pt``;
    anything else is refused unless ``cfg.overwrite``.
    """
    if cfg.out is None:
        raise UserError("--out is required")
    device = setup(cfg.seed, cfg.device)
    autocast_dtype(cfg.amp, device)  # --amp fp16 on a CPU: refused before anything is built
    dist = init_distributed(device)
    # Build (and so validate) everything before the output folder is touched: a config error must neither
    # leave a partial marker behind nor, with --overwrite, remove the previous run first.
    module, dataset, *rest = build()
    hooks = list(rest[0]) if rest else []
    if validate is not None:
        hooks.append(Validation(validate))
    trainer = Trainer(cfg, module, dataset, run_dir=cfg.out, model_name=model_name, model_kwargs=model_kwargs,
                      config_dict=to_dict(cfg), device=device, dist=dist, hooks=hooks, collate_fn=collate_fn,
                      classes=classes)
    out = open_output(cfg.out, dist, kind="checkpoint", stage=stage, config=identity(cfg), inputs=inputs or {},
                      overwrite=bool(cfg.overwrite))
    if out.state == "done":
        LOG.info("%s: complete run of the same config and inputs: nothing to do", cfg.out)
        return read_manifest(cfg.out, kind="checkpoint")
    _resume_or_start(cfg, out.folder, trainer, dist)
    trainer.train()
    barrier()
    if dist.is_main:
        _complete(cfg, out, trainer, hooks, dist, split)
    barrier()
    return read_manifest(cfg.out, kind="checkpoint")


def _resume_or_start(cfg: TrainConfig, folder, trainer: Trainer, dist) -> None:
    """Resume from ``last.pt`` when the folder holds one (``--resume`` requires it); a fresh start drops an old log."""
    last = folder / "last.pt"
    if cfg.resume and not last.exists():
        raise UserError(f"--resume: {cfg.out} holds no checkpoint to resume from (no last.pt)")
    if dist.is_main and not last.exists() and (folder / "log.jsonl").exists():
        (folder / "log.jsonl").unlink()
    if last.exists():
        trainer.resume(last)


def _complete(cfg: TrainConfig, out, trainer: Trainer, hooks: list, dist, split: Optional[str]) -> None:
    """Write the run folder's manifest: the checkpoints, the final and best names, the run's size and metrics."""
    n = sum(1 for _ in out.folder.glob("*.pt"))
    best = next((h.best_name for h in hooks if isinstance(h, Validation) and h.best_name), None)
    out.complete(num_items=n, split=split, extra={"final": "final.pt", "best": best,
                                                  "iterations": trainer.state.iteration,
                                                  "global_batch": cfg.batch_size,
                                                  "world_size": dist.world_size,
                                                  "metrics": trainer.state.metrics})
