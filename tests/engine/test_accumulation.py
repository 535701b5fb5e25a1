"""Gradient accumulation and the every-N poly schedule of the one trainer (deeplab-pytorch's 5 x 2, LR_DECAY 10)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsss.engine import TrainConfig, fit
from wsss.engine.checkpoint import load_checkpoint
from wsss.engine.schedule import build_optimizer, set_learning_rates
from wsss.errors import UserError


class LinearData(torch.utils.data.Dataset):
    """Fixed inputs and targets: nothing random at load time."""

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(2)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Deterministic(nn.Module):
    """A linear regression whose loss is the batch mean (no dropout): the gradient of 2b samples is the mean of
    the gradients of its two halves."""

    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))

    def param_groups(self, lr, weight_decay):
        return [{"params": list(self.network.parameters())}]

    def forward(self, batch):
        err = (self.network(batch["x"]).squeeze(1) - batch["y"]) ** 2
        return {"loss": err.mean(), "mse": err.mean().detach()}


def _run(out, **kw):
    cfg = TrainConfig(out=out, lr=0.05, epochs=2, workers=0, device="cpu", log_every=1, seed=5, val_every=0, **kw)
    manifest = fit(cfg, stage="test_train", build=lambda: (Deterministic(), LinearData()), model_name="lin",
                   model_kwargs={})
    return manifest, load_checkpoint(out / "final.pt")["state_dict"]


def test_accumulating_two_batches_of_b_equals_one_batch_of_2b(tmp_path):
    m_big, big = _run(tmp_path / "big", batch_size=8)
    m_acc, acc = _run(tmp_path / "acc", batch_size=4, accum_steps=2)
    assert m_big.extra["iterations"] == m_acc.extra["iterations"] == 4  # 16 samples / 8 per update x 2 epochs
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=1e-5, atol=1e-6)
    _, single = _run(tmp_path / "single", batch_size=4)
    assert not torch.allclose(single["0.weight"], big["0.weight"])  # the comparison can fail


def test_accumulation_needs_a_whole_update(tmp_path):
    with pytest.raises(UserError, match="accum-steps 3"):
        _run(tmp_path / "r", batch_size=8, accum_steps=3)
    assert not (tmp_path / "r").exists()


def test_poly_every_ten_gives_deeplab_pytorch_rates():
    # retrain.md §2.1 / §8.5.4: 20,000 updates, base 2.5e-4, power 0.9, recomputed every 10 updates.
    w = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [w], "lr_mult": 1}, {"params": [nn.Parameter(torch.zeros(1))], "lr_mult": 20}],
                          name="sgd", lr=2.5e-4, weight_decay=5e-4, momentum=0.9, psa_momentum_quirk=False)

    def rate(update):  # updates count from 1; the trainer's iteration counter from 0
        return set_learning_rates(opt, update - 1, 20000, 0.9, every=10)

    assert [rate(u) for u in (1, 5, 10)] == [2.5e-4] * 3
    assert rate(11) == pytest.approx(2.49887e-4, rel=1e-5) and rate(20) == rate(11)
    assert rate(10001) == pytest.approx(1.33972e-4, rel=1e-5)
    assert rate(20000) == pytest.approx(2.6731e-7, rel=1e-4)
    assert opt.param_groups[1]["lr"] == pytest.approx(20 * rate(20000))
    with pytest.raises(ValueError, match="every"):
        set_learning_rates(opt, 0, 10, 0.9, every=0)
