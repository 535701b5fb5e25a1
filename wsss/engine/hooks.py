"""Hooks around the training step: LR schedule, checkpoints, validation, logging (detectron2 style)."""
from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch

from wsss.engine.distributed import barrier
from wsss.engine.schedule import set_learning_rates
from wsss.process import LOG

if TYPE_CHECKING:
    from wsss.engine.trainer import Trainer


class Hook:
    """One piece of training logic around the step. The trainer sets ``self.trainer`` when it registers the hook.

    A hook with state worth keeping across a resume (a best score, say) returns it from :meth:`state_dict`; the
    trainer stores it in ``last.pt`` and hands it back to :meth:`load_state_dict` on resume.
    """

    trainer: "Trainer"

    def before_train(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self, batch: dict) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class LRSchedule(Hook):
    """Poly schedule over the whole run, per group ``initial_lr * (1 - it / max_it) ** power``, ``it`` rounded down
    to a multiple of ``poly_every``."""

    def before_step(self) -> None:
        t = self.trainer
        t.state.lr = set_learning_rates(t.optimizer, t.state.iteration, t.state.max_iters, t.cfg.poly_power,
                                        every=t.cfg.poly_every)


class Checkpointer(Hook):
    """``last.pt`` every ``ckpt_every`` iterations and at each epoch end (for resume); ``final.pt`` at the end."""

    def after_step(self, batch: dict) -> None:
        t = self.trainer
        if t.cfg.ckpt_every and t.state.iteration % t.cfg.ckpt_every == 0 and t.state.iteration < t.state.max_iters:
            t.save("last.pt")

    def after_epoch(self) -> None:
        if self.trainer.state.iteration < self.trainer.state.max_iters:
            self.trainer.save("last.pt")

    def after_train(self) -> None:
        t = self.trainer
        t.save("final.pt", with_optimizer=False)
        last = t.run_dir / "last.pt"
        if t.dist.is_main and last.exists():
            last.unlink()


class Validation(Hook):
    """Every ``val_every`` epochs (and at the end) run ``validate(network)`` on rank 0 (detectron2's EvalHook).

    When the metrics contain ``score``, the best network so far is kept as ``best_e{epoch}_s{score}.pt``; the best
    score and file are this hook's state, saved in ``last.pt`` and restored on resume.
    """

    def __init__(self, validate: Callable[[torch.nn.Module], dict]):
        self.validate = validate
        self.best: Optional[float] = None
        self.best_name: Optional[str] = None
        self.done_at = -1

    def state_dict(self) -> dict:
        return {"best": self.best, "best_name": self.best_name}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_name = state.get("best"), state.get("best_name")

    def _run(self) -> None:
        t = self.trainer
        if self.done_at == t.state.iteration:
            return
        self.done_at = t.state.iteration
        if t.dist.is_main:
            t.module.network.eval()
            with torch.no_grad():
                metrics = self.validate(t.module.network)
            t.module.train()
            t.state.metrics = metrics
            LOG.info("validation after epoch %d: %s", t.state.epoch + 1,
                     " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            score = metrics.get("score")
            if score is not None and (self.best is None or score > self.best):
                previous = t.run_dir / self.best_name if self.best_name else None
                if previous is not None and previous.exists():
                    previous.unlink()
                self.best = score
                self.best_name = t.save(f"best_e{t.state.epoch + 1:03d}_s{score:.3f}.pt", with_optimizer=False).name
        barrier()

    def after_epoch(self) -> None:
        t = self.trainer
        if t.cfg.val_every and (t.state.epoch + 1) % t.cfg.val_every == 0:
            self._run()

    def after_train(self) -> None:
        if self.trainer.cfg.val_every:
            self._run()


class Logger(Hook):
    """Progress bar on a terminal, plain lines otherwise; ``log.jsonl`` and TensorBoard scalars on rank 0."""

    def before_train(self) -> None:
        t = self.trainer
        self.t0, self.it0 = time.perf_counter(), t.state.iteration
        self.bar = self.writer = None
        if not t.dist.is_main:
            return
        LOG.info("training %s: %d iterations (%d per epoch), global batch %d = %d process(es) x %d, device %s",
                 t.model_name, t.state.max_iters, t.state.iters_per_epoch, t.cfg.batch_size, t.dist.world_size,
                 t.cfg.batch_size // t.dist.world_size, t.device)
        self.jsonl = open(t.run_dir / "log.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(t.run_dir / "tb"), purge_step=t.state.iteration or None)
        except ImportError:
            LOG.warning("tensorboard is not installed: no TensorBoard scalars")
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=t.state.max_iters, initial=t.state.iteration, dynamic_ncols=True, unit="it")

    def after_step(self, batch: dict) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        st = t.state
        rate = ((st.iteration - self.it0) * t.cfg.batch_size * t.cfg.accum_steps
                / max(time.perf_counter() - self.t0, 1e-9))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{st.losses['loss']:.4f}", img_s=f"{rate:.1f}")
        if st.iteration % t.cfg.log_every and st.iteration != st.max_iters:
            return
        record = {"iteration": st.iteration, "epoch": st.epoch, "lr": st.lr, **st.losses, "img_per_s": rate}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.bar is None:
            LOG.info("it %d/%d epoch %d lr %.3g %s %.1f img/s", st.iteration, st.max_iters, st.epoch + 1, st.lr,
                     " ".join(f"{k} {v:.4f}" for k, v in st.losses.items()), rate)
        if self.writer is not None:
            for k, v in st.losses.items():
                self.writer.add_scalar(f"train/{k}", v, st.iteration)
            self.writer.add_scalar("train/lr", st.lr, st.iteration)
            visuals = getattr(t.module, "visuals", None)
            if visuals is not None:
                with torch.no_grad():
                    for name, img in visuals(t._to_device(batch)).items():
                        self.writer.add_image(f"train/{name}", img, st.iteration)

    def after_epoch(self) -> None:
        t = self.trainer
        if t.dist.is_main and self.writer is not None:
            for k, v in t.state.metrics.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"val/{k}", v, t.state.iteration)

    def after_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        self.after_epoch()
        if t.state.metrics:
            self.jsonl.write(json.dumps({"iteration": t.state.iteration, "validation": t.state.metrics}) + "\n")
        self.jsonl.close()
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def build_hooks(extra: Sequence[Hook] = ()) -> list[Hook]:
    """The engine's hooks with a stage's own ``extra`` ones (e.g. :class:`Validation`) in their place: after the
    schedule, before the checkpointer (so ``best_*`` exists before ``final``), and logging last (it sees all)."""
    return [LRSchedule(), *extra, Checkpointer(), Logger()]
