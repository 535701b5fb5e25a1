"""The training engine on a tiny regression task: schedule, resume equivalence, NaN stop, 2-process DDP."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from wsss.artifacts import read_manifest
from wsss.engine import TrainConfig, fit
from wsss.engine.checkpoint import load_checkpoint
from wsss.engine.schedule import build_optimizer, poly_lr, set_learning_rates
from wsss.errors import UserError


class NoisyDataset(torch.utils.data.Dataset):
    """x ~ fixed; y = w.x; each load adds torch-random noise (an 'augmentation' drawn from the global RNG)."""

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.1 * torch.randn(4), "y": self.y[i]}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.body(x)))).squeeze(1)


class Regression(nn.Module):
    def __init__(self, nan_at=None):
        super().__init__()
        self.network, self.calls, self.nan_at = Net(), 0, nan_at

    def param_groups(self, lr, weight_decay):
        return [{"params": list(self.network.body.parameters()), "lr_mult": 1.0},
                {"params": list(self.network.head.parameters()), "lr_mult": 10.0, "weight_decay": 0.0}]

    def forward(self, batch):
        self.calls += 1
        loss = ((self.network(batch["x"]) - batch["y"]) ** 2).mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "mse": loss.detach()}


def _cfg(out, **kw):
    base = dict(out=out, lr=0.01, batch_size=4, epochs=2, workers=0, device="cpu", log_every=1, seed=3,
                val_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _fit(cfg, make_module=Regression):
    """Build the module inside fit (after it seeds the generators), as stages do."""
    return fit(cfg, stage="test_train", build=lambda: (make_module(), NoisyDataset()), model_name="test_net",
               model_kwargs={})


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_poly_lr_values():
    # PSA's verified sequence for max_step 10: 0.1, 0.0910, 0.0818, ..., 0.0126, then constant.
    lrs = [poly_lr(0.1, s, 10) for s in range(12)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.1 * 0.9 ** 0.9, abs=1e-12) and round(lrs[1], 4) == 0.0910
    assert round(lrs[2], 4) == 0.0818 and round(lrs[9], 4) == 0.0126
    assert lrs[10] == lrs[11] == lrs[9]


def test_group_multipliers_and_momentum_quirk():
    w, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = build_optimizer([{"params": [w], "lr_mult": 1}, {"params": [b], "lr_mult": 20, "weight_decay": 0}],
                          name="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, psa_momentum_quirk=True)
    assert opt.defaults["momentum"] == 5e-4 and opt.defaults["weight_decay"] == 0
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0]
    set_learning_rates(opt, 5, 10, 0.9)
    assert opt.param_groups[1]["lr"] == pytest.approx(20 * 0.1 * 0.5 ** 0.9)
    fixed = build_optimizer([{"params": [w]}], name="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9,
                            psa_momentum_quirk=False)
    assert fixed.defaults["momentum"] == 0.9


def test_fit_writes_checkpoint_artifact(tmp_path):
    m = _fit(_cfg(tmp_path / "run"))
    assert m.kind == "checkpoint" and m.extra["iterations"] == 8  # 16 samples / batch 4 * 2 epochs
    ckpt = load_checkpoint(tmp_path / "run" / "final.pt")
    assert ckpt["model"] == "test_net" and ckpt["iteration"] == 8 and set(ckpt["state_dict"]) == {
        "body.weight", "body.bias", "head.weight", "head.bias"}
    assert not (tmp_path / "run" / "last.pt").exists()
    assert len(_losses(tmp_path / "run")) == 8
    # Same config again: nothing to do. Another config: refused, files untouched.
    assert _fit(_cfg(tmp_path / "run")).created_at == m.created_at
    with pytest.raises(UserError, match="another config"):
        _fit(_cfg(tmp_path / "run", lr=0.02))
    assert read_manifest(tmp_path / "run", "checkpoint").created_at == m.created_at


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full = tmp_path / "full"
    _fit(_cfg(full, ckpt_every=1))

    class Killed(Exception):
        pass

    class DiesAtCall6(Regression):
        def forward(self, batch):
            if self.calls == 5:
                raise Killed()
            return super().forward(batch)

    part = tmp_path / "part"
    with pytest.raises(Killed):
        _fit(_cfg(part, ckpt_every=1), DiesAtCall6)
    assert (part / "last.pt").exists() and not (part / "manifest.json").exists()
    with pytest.raises(UserError, match="incomplete"):
        read_manifest(part, "checkpoint")
    _fit(_cfg(part, ckpt_every=1))  # a fresh process would do the same: same config -> resume
    assert _losses(part) == pytest.approx(_losses(full), rel=1e-6)
    a = load_checkpoint(full / "final.pt")["state_dict"]
    b = load_checkpoint(part / "final.pt")["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_nan_loss_stops_with_iteration_and_keeps_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"loss is nan at iteration 5 \(epoch 1\).*last good checkpoint"):
        _fit(_cfg(run), lambda: Regression(nan_at=6))
    assert load_checkpoint(run / "last.pt")["iteration"] == 4  # saved at the end of epoch 1
    assert not (run / "manifest.json").exists()


def test_bad_batch_size_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="batch-size"):
        _fit(_cfg(tmp_path / "run", batch_size=32))
    with pytest.raises(UserError, match="batch-size"):
        _cfg(tmp_path / "x", batch_size=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_dropout():
    module = Regression()
    module.network.drop.p = 0.0  # dropout masks differ per rank by design; compare the maths without them
    return module


def _ddp_worker(rank, world, port, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    modules = []
    fit(_cfg(out, max_iters=2), stage="test_train", build=lambda: (modules.append(_no_dropout()) or modules[0],
                                                                     NoisyDataset()),
        model_name="test_net", model_kwargs={})
    torch.save(modules[0].network.state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_gloo_replicas_stay_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # The global batch is the same as a single process with batch 4: the weights agree with that run too.
    _fit(_cfg(tmp_path / "single", max_iters=2), _no_dropout)
    s = load_checkpoint(tmp_path / "single" / "final.pt")["state_dict"]
    assert all(torch.allclose(r0[k], s[k], atol=1e-5) for k in r0)
    m = read_manifest(tmp_path / "ddp", "checkpoint")
    assert m.extra["world_size"] == 2 and m.extra["global_batch"] == 4


def test_config_error_leaves_the_previous_run_untouched(tmp_path):
    run = tmp_path / "run"
    m = _fit(_cfg(run))
    with pytest.raises(UserError, match="batch-size"):
        _fit(_cfg(run, batch_size=32, overwrite=True))  # refused before --overwrite could remove anything
    assert read_manifest(run, "checkpoint").created_at == m.created_at


def test_best_score_is_hook_state_that_survives_a_resume(tmp_path):
    """The best checkpoint is the validation hook's state, carried through last.pt, not parsed from file names."""
    scores = iter([0.7, 0.65, 0.8, 0.9])  # epochs 1, 2 of the first run; epochs 3, 4 after the resume

    def validate(network):
        return {"score": next(scores)}

    class Killed(Exception):
        pass

    class DiesInEpoch3(Regression):
        def forward(self, batch):
            if self.calls == 9:
                raise Killed()
            return super().forward(batch)

    run = tmp_path / "run"
    build = lambda module: (lambda: (module(), NoisyDataset()))  # noqa: E731
    with pytest.raises(Killed):
        fit(_cfg(run, epochs=4, val_every=1), stage="t", build=build(DiesInEpoch3), model_name="n", model_kwargs={},
            validate=validate)
    assert sorted(p.name for p in run.glob("best_*")) == ["best_e001_s0.700.pt"]
    (run / "best_e009_s0.990.pt").write_bytes(b"")  # a decoy: the score lives in the hook, not in file names
    m = fit(_cfg(run, epochs=4, val_every=1), stage="t", build=build(Regression), model_name="n", model_kwargs={},
            validate=validate)
    assert m.extra["best"] == "best_e004_s0.900.pt"
    assert sorted(p.name for p in run.glob("best_*")) == ["best_e004_s0.900.pt", "best_e009_s0.990.pt"]
