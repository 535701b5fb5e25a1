"""Images/s and peak memory of one training step of every training stage: fp32 against AMP, channels_last and
gradient checkpointing of the backbone.

A step is what the engine runs per iteration, :meth:`wsss.engine.trainer.Trainer.run_step`: forward, backward and the
optimizer step (plus gradient scaling for fp16) of the train module the stage itself builds (``network_name``,
``network_kwargs``, ``train_module`` of ``wsss/stages/*_train.py``) from its recipe config, on a synthetic batch at
the recipe's crop and batch size (``seg``: 5 x 2 accumulated batches, deeplab-pytorch's update). Warm-up steps are
not timed. The single-stage networks are measured past their warm-up epochs (segmentation loss on). Weights are
random: speed and memory do not depend on them.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps (weights, gradients, optimizer state
and activations), plus ``max_memory_reserved`` (what the caching allocator held: what must fit the card); on CPU the
growth of the process's peak RSS (``resource.getrusage().ru_maxrss``) from just before the network is built to the
end, each row in a process forked for it (whose peak starts at the current RSS), so that one row's peak does not
hide the next one's. The parent process never computes on the CPU before forking (no OpenMP pool to inherit).

Usage:
    python benchmarks/train_speed.py --quick            # CPU: tiny backbone, crop 96, batch <= 4, 1 + 2 steps
    python benchmarks/train_speed.py --device cuda      # real backbones at the recipes' crops and batches
    python benchmarks/train_speed.py --device cuda --stages single --variants bf16,bf16+ckpt --limit-gb 24
    python benchmarks/train_speed.py --device cpu --real --stages single --batch 2 --variants fp32,ckpt  # slow
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NUM_CLASSES = 20  # VOC
# row -> (stage module, extra config flags, batch kind)
STAGES = {
    "cam": ("wsss.stages.cam_train", {}, "cls"),
    "seam": ("wsss.stages.seam_train", {}, "cls"),
    "aff": ("wsss.stages.aff_train", {}, "aff"),
    "single": ("wsss.stages.single_train", {"model": "single_stage"}, "cls"),
    "wsfcn": ("wsss.stages.single_train", {"model": "wsfcn"}, "cls"),
    "irn": ("wsss.stages.irn_train", {}, "irn"),
    "seg": ("wsss.stages.seg_train", {}, "seg"),
}
# variant -> engine options
VARIANTS = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "fp16": {"amp": "fp16"},
    "channels_last": {"channels_last": True},
    "bf16+cl": {"amp": "bf16", "channels_last": True},
    "ckpt": {"grad_checkpoint": True},
    "bf16+ckpt": {"amp": "bf16", "grad_checkpoint": True},
    "fp16+ckpt": {"amp": "fp16", "grad_checkpoint": True},
}
CPU_VARIANTS = ("fp32", "bf16", "channels_last", "ckpt")
CUDA_VARIANTS = ("fp32", "bf16", "fp16", "channels_last", "bf16+cl", "ckpt", "bf16+ckpt")
QUICK_CROP = 96  # CPU: tiny backbone; aff and irn need at least 72 and 76 for their pair radii
QUICK_BATCH = 4  # CPU: bf16 autocast is emulated on CPUs without bf16 instructions, 10x slower than fp32
GIB = 2 ** 30


def stage_setup(row: str, variant: str, device: str, tiny: bool, crop: int | None, batch: int | None):
    """(stage, resolved config, train module) of ``row`` with the ``variant``'s engine options."""
    from wsss.config import resolve
    from wsss.models.registry import build_model

    module_name, extra, _ = STAGES[row]
    stage = importlib.import_module(module_name).STAGE
    flags = {"out": Path(tempfile.gettempdir()) / "train_speed_unused", "device": device, "workers": 0, **extra,
             **VARIANTS[variant]}
    if tiny:
        flags["backbone"] = "tiny"
    if crop is not None:
        flags["crop"] = crop
    resolver = getattr(stage, "resolve_config", None)
    cfg = resolver(flags=flags) if resolver is not None else resolve(stage.config, flags=flags)
    if batch is not None and batch < cfg.batch_size:  # a cap, not a replacement
        cfg = dataclasses.replace(cfg, batch_size=batch)
    data = SimpleNamespace(num_classes=NUM_CLASSES)
    network = build_model(stage.network_name(cfg), **stage.network_kwargs(cfg, data))
    module = stage.train_module(network, cfg)
    if hasattr(module, "set_epoch"):
        module.set_epoch(getattr(cfg, "warmup_epochs", 0))  # past the warm-up: the full loss
    return stage, cfg, module


def regions(n: int, size: int, g: torch.Generator, ignore_band: bool = True) -> torch.Tensor:
    """(n, size, size) int64 label maps: background, one rectangle of a random class, an ignore band around it."""
    maps = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        y0, x0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        y1, x1 = y0 + size // 3, x0 + size // 3
        if ignore_band:
            maps[i, max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 255
        maps[i, y0:y1, x0:x1] = int(torch.randint(1, NUM_CLASSES + 1, (), generator=g))
    return maps


def synthetic_batch(kind: str, n: int, size: int, seed: int = 0) -> dict:
    """The batch a stage's dataset would give: normalised image, labels or label maps."""
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(n, 3, size, size, generator=g)}
    if kind == "cls":
        label = (torch.rand(n, NUM_CLASSES, generator=g) < 0.1).float()
        label[torch.arange(n), torch.randint(0, NUM_CLASSES, (n,), generator=g)] = 1.0
        batch["label"] = label
    elif kind == "aff":
        la = regions(n, size, g)
        batch["la"], batch["ha"] = la, torch.where(la == 255, 0, la)
    elif kind == "irn":
        batch["ir_label"] = regions(n, size, g)
    else:
        batch["mask"] = regions(n, size, g, ignore_band=False)
    return batch


def measure(row: str, variant: str, device: str, tiny: bool, crop, batch, warmup: int, steps: int) -> dict:
    """One row: build, ``warmup`` untimed steps, ``steps`` timed ones."""
    from wsss.engine.distributed import DistInfo
    from wsss.engine.trainer import Trainer
    from wsss.process import setup

    dev = setup(0, device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stage, cfg, module = stage_setup(row, variant, device, tiny, crop, batch)
    size, n = cfg.crop, cfg.batch_size
    batches = [synthetic_batch(STAGES[row][2], n, size, seed=i) for i in range(cfg.accum_steps)]
    batches = [{k: v.to(dev) for k, v in b.items()} for b in batches]
    step_batch = batches if len(batches) > 1 else batches[0]
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, module, [batches[0]] * n * cfg.accum_steps, run_dir=Path(run_dir),
                          model_name=stage.network_name(cfg), model_kwargs={}, config_dict={}, device=dev,
                          dist=DistInfo())
        module.train()
        first = trainer.run_step(step_batch)["loss"]
        for _ in range(warmup - 1):
            trainer.run_step(step_batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            loss = trainer.run_step(step_batch)["loss"]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    backbone = getattr(getattr(module.network, "backbone", None), "name", None) or cfg.backbone
    out = {"row": row, "variant": variant, "network": stage.network_name(cfg), "backbone": backbone,
           "crop": size, "batch": n * cfg.accum_steps, "step_s": seconds, "img_s": n * cfg.accum_steps / seconds,
           "loss_first": first, "loss": loss}
    if dev.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        out["reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    else:
        out["peak_gib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2 ** 20  # KiB
    return out


def _child(conn, args, row: str, variant: str) -> None:
    """A CPU row in a forked process; sends its result (or its error) back."""
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        conn.send(measure(row, variant, "cpu", args.tiny, args.crop, args.batch, args.warmup, args.steps))
    except Exception as e:  # noqa: BLE001 - reported as the row's result
        conn.send({"row": row, "variant": variant, "error": f"{type(e).__name__}: {e}"[:80]})


def run_row(args, row: str, variant: str) -> dict:
    """A row in a forked process on CPU (RSS peaks), in this one on CUDA (allocator statistics reset per row)."""
    if args.device == "cuda":
        try:
            return measure(row, variant, "cuda", args.tiny, args.crop, args.batch, args.warmup, args.steps)
        except torch.OutOfMemoryError:
            return {"row": row, "variant": variant, "error": "OOM"}
        finally:
            gc.collect()  # an OOM's traceback held the row's tensors
            torch.cuda.empty_cache()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, args, row, variant))
    proc.start()
    try:
        return receive.recv()
    except EOFError:
        return {"row": row, "variant": variant, "error": "the process died"}
    finally:
        proc.join()


def table(results: list[dict], device: str, limit_gb: float) -> str:
    """One markdown table; ``x fp32`` is the speed relative to the same row's fp32 variant."""
    fp32 = {r["row"]: r["img_s"] for r in results if r["variant"] == "fp32" and "img_s" in r}
    memory = "peak alloc GiB | reserved GiB | fits %g GB" % limit_gb if device == "cuda" else "RSS peak +GiB"
    columns = 11 + (2 if device == "cuda" else 0)
    lines = [f"| stage | network | backbone | crop | batch | variant | img/s | x fp32 | step s | {memory} | loss@1 |",
             "|" + "---|" * columns]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | | | | | {r['variant']} | {r['error']} |" + " |" * (columns - 7))
            continue
        ratio = f"{r['img_s'] / fp32[r['row']]:.2f}" if r["row"] in fp32 else "-"
        mem = f"{r['peak_gib']:.2f}"
        if device == "cuda":  # the CUDA context and cuDNN workspaces take about 1 GiB beyond the allocator's pool
            mem += f" | {r['reserved_gib']:.2f} | {'yes' if r['reserved_gib'] + 1 <= limit_gb * 1e9 / GIB else 'no'}"
        lines.append(f"| {r['row']} | {r['network']} | {r['backbone']} | {r['crop']} | {r['batch']} | {r['variant']} "
                     f"| {r['img_s']:.3g} | {ratio} | {r['step_s']:.3f} | {mem} | {r['loss_first']:.4f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--quick", action="store_true", help="CPU setting: tiny backbone, crop 96, 1 + 2 steps")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated rows: " + ", ".join(STAGES))
    p.add_argument("--variants", default=None, help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--tiny", action="store_true", help="the tiny backbone (the default on CPU)")
    p.add_argument("--real", action="store_true", help="the recipes' backbones on CPU too (slow)")
    p.add_argument("--crop", type=int, default=None, help="crop size (default: the recipe's; --quick: 96)")
    p.add_argument("--batch", type=int, default=None, help="cap on the batch size (default: the recipe's; --quick: 4)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--limit-gb", type=float, default=24.0,
                   help="CUDA: the card size the 'fits' column checks; with --hard-limit the allocator is capped")
    p.add_argument("--hard-limit", action="store_true", help="CUDA: cap this process at --limit-gb (OOM rows)")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    if args.device == "cpu" and not args.real:
        args.tiny = True
    if args.quick:
        args.crop, args.batch = args.crop or QUICK_CROP, args.batch or QUICK_BATCH
        args.warmup, args.steps = 1, 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    for name in ["wsss.engine.trainer", "wsss.models.registry"] + [STAGES[s][0] for s in STAGES]:
        importlib.import_module(name)  # once, before the CPU rows fork
    if args.device == "cuda" and args.hard_limit:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.limit_gb * 1e9 / total))
    variants = args.variants.split(",") if args.variants else list(
        CUDA_VARIANTS if args.device == "cuda" else CPU_VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS] + [s for s in args.stages.split(",") if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage or variant: {', '.join(unknown)}")
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# train_speed on {where}, torch {torch.__version__}, warm-up {args.warmup}, timed {args.steps} steps",
          flush=True)
    start = time.perf_counter()
    results = []
    for row in args.stages.split(","):
        for variant in variants:
            results.append(run_row(args, row, variant))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results, args.device, args.limit_gb))
    if args.device == "cuda":
        print("# memory: torch.cuda.max_memory_allocated / max_memory_reserved over the timed steps; 'fits' allows "
              "1 GiB for the CUDA context")
    else:
        print("# memory: growth of the peak RSS (getrusage ru_maxrss) from before the network was built, one forked "
              "process per row")
    print(f"# {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
