"""Speed options of the training engine: channels_last, gradient checkpointing, AMP, and the data loader.

Each faster path is compared with the plain one: the same training step, the same gradients, the same samples.
"""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from tests.cli.checks import assert_user_error
from wsss.config import identity
from wsss.engine import TrainConfig
from wsss.engine.sampling import EpochBatchSampler, SeededDataset
from wsss.engine.trainer import Trainer, autocast_dtype
from wsss.engine.distributed import DistInfo
from wsss.errors import UserError
from wsss.models.backbone import enable_grad_checkpoint
from wsss.models.registry import build_backbone, build_model
from wsss.models.single_stage import SingleStageTrainModule
from wsss.stages.cam_train import CamTrainModule

NUM_CLASSES = 4


def _batch(n: int = 2, size: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = (torch.rand(n, NUM_CLASSES, generator=g) < 0.5).float()
    label[:, 0] = 1.0
    return {"image": torch.randn(n, 3, size, size, generator=g), "label": label}


def _trainer(tmp_path, module, **options) -> Trainer:
    cfg = TrainConfig(out=tmp_path, lr=0.1, momentum=0.9, batch_size=2, workers=0, device="cpu", seed=0, **options)
    data = [_batch(1, seed=i) for i in range(2)]
    return Trainer(cfg, module, data, run_dir=tmp_path, model_name="cam", model_kwargs={}, config_dict={},
                   device=torch.device("cpu"), dist=DistInfo())


def _cam_module() -> CamTrainModule:
    torch.manual_seed(0)
    return CamTrainModule(build_model("cam", backbone="tiny", num_classes=NUM_CLASSES))


def _single_stage_module() -> SingleStageTrainModule:
    """The single-stage network (ASPP, GCI, PAMR, pseudo labels) with its element-wise random masks off (dropout and
    the stochastic gate draw them in memory order, so channels_last would draw other ones from the same seed)."""
    torch.manual_seed(0)
    network = build_model("single_stage", backbone="tiny", num_classes=NUM_CLASSES + 1)
    for m in network.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    network.gate.psi = 0.0
    return SingleStageTrainModule(network, warmup_epochs=0)


def _step(tmp_path, make_module=_cam_module, **options) -> tuple[dict, dict, dict]:
    """One update of a fresh train module on the same batch: (logged losses, gradients, updated parameters)."""
    trainer = _trainer(tmp_path, make_module(), **options)
    torch.manual_seed(1)  # the same dropout masks in every variant
    logged = trainer.run_step(_batch())
    named = list(trainer.module.network.named_parameters())
    return (logged, {k: p.grad.clone() for k, p in named if p.grad is not None},
            {k: p.detach().clone() for k, p in named})


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("make_module", [_cam_module, _single_stage_module])
def test_channels_last_step_equals_the_plain_step(tmp_path, make_module):
    plain = _step(tmp_path / "a", make_module)
    fast = _step(tmp_path / "b", make_module, channels_last=True)
    trainer = _trainer(tmp_path / "c", _cam_module(), channels_last=True)
    conv = trainer.module.network.backbone.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-5)
    assert _max_diff(plain[1], fast[1]) < 1e-5
    assert _max_diff(plain[2], fast[2]) < 1e-5


@pytest.mark.parametrize("name, kwargs, size", [
    ("tiny", {}, 48),  # BatchNorm in training mode: running statistics must be counted once
    ("wideresnet38", {}, 32),  # Dropout2d in b6/b7: the recomputation must draw the same masks
    ("resnet50", {"freeze_bn": False}, 48),
    ("resnet101_caffe", {"blocks": (1, 2, 1, 1), "freeze_bn": False}, 48),
])
def test_grad_checkpoint_gives_the_plain_gradients_and_buffers(name, kwargs, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, **kwargs).train()
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randn(2, 3, size, size)

    def run(checkpointed: bool) -> tuple[dict, dict]:
        backbone.load_state_dict(start)
        backbone.zero_grad(set_to_none=True)
        assert enable_grad_checkpoint(backbone, checkpointed) == [name]
        torch.manual_seed(5)
        taps = backbone(x)
        sum((v ** 2).mean() for k, v in taps.items() if k != "out").backward()
        grads = {k: p.grad.clone() for k, p in backbone.named_parameters() if p.grad is not None}
        return grads, {k: v.clone() for k, v in backbone.named_buffers()}

    plain_grads, plain_buffers = run(False)
    ckpt_grads, ckpt_buffers = run(True)
    assert _max_diff(plain_grads, ckpt_grads) < 1e-6
    assert _max_diff(plain_buffers, ckpt_buffers) == 0.0
    if name == "tiny":
        assert int(ckpt_buffers["stem.1.num_batches_tracked"]) == 1


def test_grad_checkpoint_through_the_trainer(tmp_path):
    plain = _step(tmp_path / "a")
    ckpt = _step(tmp_path / "b", grad_checkpoint=True)
    assert _max_diff(plain[1], ckpt[1]) < 1e-6 and _max_diff(plain[2], ckpt[2]) < 1e-6
    assert _trainer(tmp_path / "c", _cam_module(), grad_checkpoint=True).module.network.backbone.grad_checkpoint
    with torch.no_grad():  # inference and validation: no checkpointing, plain forward
        out = _cam_module().network.backbone.train()
        enable_grad_checkpoint(out)
        assert not out(torch.randn(1, 3, 32, 32))["out"].requires_grad


def test_amp_bf16_on_cpu_runs_a_step_close_to_fp32(tmp_path):
    plain = _step(tmp_path / "a")
    bf16 = _step(tmp_path / "b", amp="bf16")
    assert torch.isfinite(torch.tensor(bf16[0]["loss"]))
    assert bf16[0]["loss"] == pytest.approx(plain[0]["loss"], rel=0.05)
    assert bf16[0]["loss"] != plain[0]["loss"]  # autocast did run in bf16
    assert all(torch.isfinite(g).all() for g in bf16[1].values())
    assert _max_diff(plain[2], bf16[2]) < 0.05


def test_fp16_is_cuda_only_and_gpus_without_bf16_are_told():
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA device"):
        autocast_dtype("fp16", torch.device("cpu"))
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA device"):
        TrainConfig(out="x", device="cpu", amp="fp16")
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype(None, torch.device("cpu")) is None


def test_fp16_on_cpu_through_the_cli_is_one_line_and_writes_nothing(toy_data, tmp_path, monkeypatch):
    from wsss.cli.main import cli

    out = tmp_path / "run"
    args = ["cam", "train", "--data", str(toy_data), "--out", str(out), "--backbone", "tiny", "--amp", "fp16"]
    assert_user_error(CliRunner().invoke(cli, [*args, "--device", "cpu"]), "--amp fp16", "CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device auto on a machine without a GPU
    assert_user_error(CliRunner().invoke(cli, args), "--amp fp16", "CUDA")
    assert not out.exists()


def test_amp_is_identity_and_layout_options_are_runtime(tmp_path):
    base = identity(TrainConfig(out=tmp_path))
    assert identity(TrainConfig(out=tmp_path, channels_last=True, grad_checkpoint=True)) == base
    assert identity(TrainConfig(out=tmp_path, amp="bf16")) != base


def test_grad_scaler_state_survives_a_resume(tmp_path):
    first = _trainer(tmp_path, _cam_module())
    first.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    first.scaler.scale(torch.ones(()))  # the scale tensor is made on first use
    first.scaler.update(512.0)
    first.save("last.pt")
    second = _trainer(tmp_path, _cam_module())
    second.scaler = torch.amp.GradScaler("cpu")
    second.resume(tmp_path / "last.pt")
    assert second.scaler.get_scale() == 512.0 and second.scaler.get_growth_interval() == 7


def test_checkpoints_of_a_channels_last_run_are_contiguous(tmp_path):
    from wsss.engine.checkpoint import load_checkpoint

    trainer = _trainer(tmp_path, _cam_module(), channels_last=True)
    trainer.save("final.pt", with_optimizer=False)
    state = load_checkpoint(tmp_path / "final.pt")["state_dict"]
    assert all(v.is_contiguous() for v in state.values())


class _Draws(torch.utils.data.Dataset):
    """Item i = a random number drawn at load time (the augmentation's RNG)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(())


def _epochs(workers: int) -> list[list[float]]:
    dataset = SeededDataset(_Draws(), seed=3)
    sampler = EpochBatchSampler(4, 2, 0, 1, seed=3, shuffle=False)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0)
    out = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        out.append(torch.cat(list(loader)).tolist())
    return out


def test_persistent_workers_see_the_epoch():
    in_process, workers = _epochs(0), _epochs(1)
    assert workers == in_process
    assert workers[0] != workers[1]  # epoch 1 is augmented afresh, not a replay of epoch 0
