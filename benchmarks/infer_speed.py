"""Per-image network inference: our per-image loop against the reference formulation, at real size.

Stages (real backbones, random weights, synthetic 500x375 JPEGs decoded as the datasets decode them):
``cam infer`` (WideResNet-38 ``cam``), ``seam infer`` (``seam``), ``single infer`` (``single_stage``, every scale
centre-padded to ``pad_size``), ``wsfcn`` (``single infer`` of ``wsfcn``) and ``seg infer`` (``deeplabv2_resnet101``,
the stage's default recipe plus ``--flip``), each at its stage's default settings.

* **ours**: the stage's own loop, ``STAGE.compute`` (what ``wsss <stage> infer`` runs): ``load`` (decode, resize,
  normalise) in ``--workers`` DataLoader processes, the image and its flip in one batch, ``torch.inference_mode``,
  with (CUDA) ``--amp``; measured as it is and with ``--channels-last``.
* **reference**: written here, the original code's formulation: ids one after the other, each decoded in the main
  process, then one batch-1 forward per scale and per flip under ``torch.no_grad`` (:class:`Batch1`), fp32, the
  default memory format. The fusion after the forwards is the stage's own, so the outputs differ only by what the
  forward formulation changes.

The three take turns, ``--repeat`` rounds over every image (the best round of each kept, so first-call costs and
other jobs' bursts drop out). Outputs: the CAMs' max |difference|, or the share of equal labels and the max
|difference| of the scores they are the argmax of.
Single infer and wsfcn use the image labels (``--clean``), and wsfcn a constant background of 0.05 instead of its
0.25: with random weights the masks are near 0.05 and the predicted image labels empty, so the labels compared
would otherwise all be background. ``GFLOP/img`` counts the network passes
of one image with ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device: shapes only, no compute);
achieved GFLOP/s = that / seconds per image, next to a plain fp32 matmul's GFLOP/s (on CUDA the convolutions may
use TF32, the matmul does not). ``--quick`` (under 5 minutes on 2 cores): 1 image, scale 0.5 only (with its flip)
for every stage, pad size 256 for single infer and wsfcn.

    python benchmarks/infer_speed.py --quick [--threads N] [--workers 0] [--repeat 2] [--device cpu]
    python benchmarks/infer_speed.py --device cuda --images 8 [--amp]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from wsss.data.image_decode import read_rgb
from wsss.engine.distributed import DistInfo
from wsss.engine.infer_runtime import prepare_network
from wsss.engine.inference import Context
from wsss.models.registry import build_model
from wsss.stages import cam_infer, seam_infer, seg_infer, single_infer

HEIGHT, WIDTH = 375, 500
# name -> (stage module, network, its kwargs, config fields, --quick config fields)
STAGES = {
    "cam infer": (cam_infer, "cam", {"num_classes": 20}, {}, {"scales": (0.5,)}),
    "seam infer": (seam_infer, "seam", {"num_classes": 20}, {}, {"scales": (0.5,)}),
    "single infer": (single_infer, "single_stage", {"num_classes": 21}, {"clean": True},
                     {"scales": (0.5,), "pad_size": 256}),
    "wsfcn": (single_infer, "wsfcn", {"num_classes": 21}, {"clean": True, "bg_const": 0.05},
              {"scales": (0.5,), "pad_size": 256}),
    "seg infer": (seg_infer, "deeplabv2_resnet101", {"num_classes": 21}, {"flip": True}, {"scales": (0.5,)}),
}


class JpegData:
    """What the stages' ``load`` reads of a dataset, over ``n`` synthetic 500x375 JPEGs written to ``folder``:
    smooth colour fields with a few boxes, two classes (0 and 14) per image."""

    classes = [f"class{i}" for i in range(20)]
    num_classes = 20

    def __init__(self, folder: Path, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.folder, self.image_ids = Path(folder), [f"bench_{i:03d}" for i in range(n)]
        for image_id in self.image_ids:
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            image = np.asarray(coarse.resize((WIDTH, HEIGHT), Image.BICUBIC)).copy()
            for _ in range(3):
                y, x = rng.integers(0, HEIGHT - 80), rng.integers(0, WIDTH - 80)
                image[y:y + rng.integers(40, 80), x:x + rng.integers(40, 80)] = rng.integers(0, 256, 3)
            Image.fromarray(image).save(self.folder / f"{image_id}.jpg", quality=90)

    def read_image(self, image_id: str) -> np.ndarray:
        return read_rgb(self.folder / f"{image_id}.jpg")

    def labels(self, image_id: str) -> np.ndarray:
        return np.array([0, 14], dtype=np.int64)

    def has_labels(self, image_id: str) -> bool:
        return True

    def label_vector(self, image_id: str) -> np.ndarray:
        vector = np.zeros(self.num_classes, np.float32)
        vector[self.labels(image_id)] = 1
        return vector


def _stack(outputs: list):
    """Batch-1 outputs (tensors, or dicts of them) stacked back into one batch."""
    if isinstance(outputs[0], dict):
        return {key: _stack([out[key] for out in outputs]) for key in outputs[0]}
    return torch.cat(outputs)


class Batch1(torch.nn.Module):
    """The reference's way of running the network: each row of a batch (a scale's image, then its flip) in its own
    batch-1 forward."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network, self.normalization = network, network.normalization
        if hasattr(network, "forward_cam"):
            self.forward_cam = lambda x: _stack([network.forward_cam(row[None]) for row in x])

    def forward(self, x: torch.Tensor):
        return _stack([self.network(row[None]) for row in x])


def reference_items(stage, ctx: Context, ids: list) -> dict:
    """id -> item value, the reference way: sequential decode, batch-1 forwards, ``no_grad``."""
    items = {}
    with torch.no_grad():
        for image_id in ids:
            items[image_id] = stage.predict(ctx, image_id, stage.load(ctx, image_id))
    return items


def timed(fn, device: torch.device):
    """(seconds, result) of ``fn()``, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def matmul_gflops(device: torch.device, n: int, repeat: int = 5) -> float:
    """The machine's fp32 GFLOP/s: best of ``repeat`` n x n x n matmuls (2 n^3 FLOPs each)."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    a @ b
    return 2 * n ** 3 / min(timed(lambda: a @ b, device)[0] for _ in range(repeat)) / 1e9


def image_gflop(spec: tuple, ctx: Context, image_id: str) -> float:
    """FLOPs of the network passes of one image (its inputs as ``load`` makes them), counted on the meta device."""
    module, model, kwargs = spec[:3]
    loaded = module.STAGE.load(dataclasses.replace(ctx, network=None), image_id)
    shapes = [tuple((x if isinstance(x, torch.Tensor) else x[0]).shape) for x in loaded["inputs"]]
    with torch.device("meta"):
        meta = build_model(model, **kwargs).eval()
    run = meta.forward_cam if module is cam_infer else meta
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for shape in shapes:
            run(torch.empty(shape, device="meta"))
    return counter.get_total_flops() / 1e9


# label stages: (function whose argument or result holds the scores the labels are the argmax of, which)
SCORES = {single_infer: ("merge_masks", "argument"), seg_infer: ("fuse_logits", "result")}


@contextlib.contextmanager
def recorded_scores(module, sink: list):
    """Appends to ``sink`` the scores of every image a label stage computes: single infer's fused masks (before
    the labels and background rules), seg infer's fused logits."""
    if module not in SCORES:
        yield
        return
    name, which = SCORES[module]
    original = getattr(module, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        sink.append((args[0] if which == "argument" else result).detach().float().cpu().clone())
        return result

    setattr(module, name, spy)
    try:
        yield
    finally:
        setattr(module, name, original)


def compare(kind: str, ours: tuple, ref: tuple) -> str:
    """Max |difference| of the CAMs, or the share of equal labels and the max |difference| of the scores."""
    (items, scores), (ref_items, ref_scores) = ours, ref
    if kind == "cam":
        diff = max(float(np.abs(items[i][0] - ref_items[i][0]).max()) for i in ref_items)
        return f"CAMs max abs diff {diff:.1e}"
    equal = np.mean([(items[i] == ref_items[i]).mean() for i in ref_items])
    present = len(np.unique(np.concatenate([ref_items[i].ravel() for i in ref_items])))
    diff = max(float((a - b).abs().max()) for a, b in zip(scores, ref_scores))
    return f"labels {100 * equal:.3f} % equal ({present} present), scores max abs diff {diff:.1e}"


def settings(cfg) -> str:
    parts = [f"scales {','.join(f'{s:g}' for s in cfg.scales)}", "flip" if cfg.flip else "no flip"]
    if getattr(cfg, "pad_size", None):
        parts.append(f"pad {cfg.pad_size}")
    if getattr(cfg, "bg_const", None) is not None:
        parts.append(f"bg {cfg.bg_const:g}")
    return " ".join(parts + ["clean"] * bool(getattr(cfg, "clean", False)))


def runners(module, cfg, network: torch.nn.Module, data: JpegData, device: torch.device) -> dict:
    """name -> ``() -> (id -> item, recorded scores)``: ours (the stage's loop), ours in channels-last, the
    reference (:func:`reference_items`), each with its own copy of ``network``."""
    def ours(channels_last: bool):
        vcfg = dataclasses.replace(cfg, channels_last=channels_last)
        net = prepare_network(copy.deepcopy(network), vcfg, device)
        ctx = Context(vcfg, data, device, DistInfo(), net, net.normalization)
        return lambda: recorded(lambda: dict(module.STAGE.compute(ctx, data.image_ids)))

    def recorded(fn):
        sink = []
        with recorded_scores(module, sink):
            return fn(), sink

    ref_cfg = dataclasses.replace(cfg, workers=0, channels_last=False, amp=False)
    ref_ctx = Context(ref_cfg, data, device, DistInfo(), Batch1(network), network.normalization)
    return {"ours": ours(False), "ours_cl": ours(True),
            "ref": lambda: recorded(lambda: reference_items(module.STAGE, ref_ctx, data.image_ids))}


def bench_stage(name: str, data: JpegData, args, device: torch.device) -> dict:
    """Ours, ours in channels-last and the reference, interleaved ``--repeat`` times on every image (the best
    time of each kept): seconds per image, FLOPs, outputs compared."""
    spec = STAGES[name]
    module, model, kwargs, fields, quick = spec
    cfg = module.STAGE.config(device=device.type, workers=args.workers, amp=args.amp,
                              **{**fields, **(quick if args.quick else {})})
    torch.manual_seed(0)
    network = build_model(model, **kwargs).eval().to(device)
    cfg = module.STAGE.settle(cfg, network)
    best, outputs, n = {}, {}, len(data.image_ids)
    runs = runners(module, cfg, network, data, device)
    for _ in range(args.repeat):
        for key, run in runs.items():
            seconds, outputs[key] = timed(run, device)
            best[key] = min(best.get(key, float("inf")), seconds / n)
    gflop = image_gflop(spec, Context(cfg, data, device, DistInfo(), None, network.normalization), data.image_ids[0])
    return {"stage": name, "network": model, "settings": settings(cfg), "gflop": gflop, **best,
            "outputs": compare(module.STAGE.kind, outputs["ours"], outputs["ref"]),
            "outputs_cl": compare(module.STAGE.kind, outputs["ours_cl"], outputs["ref"])}


def print_table(rows: list, peak: float, args, device: torch.device) -> None:
    mode = "quick: 1 image, scale 0.5 (+ flip) only, pad 256" if args.quick else "stage defaults"
    extras = [f"workers {args.workers}"] + ["bf16 autocast"] * args.amp
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"infer speed: {args.images} image(s) 500x375, {device.type} ({name}), {torch.get_num_threads()} "
          f"thread(s), best of {args.repeat}, ours with {', '.join(extras)}; {mode}; torch {torch.__version__}")
    print(f"machine: fp32 matmul {args.matmul_n}^3: {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
    print("| stage | network | settings | GFLOP/img | reference s/img (GFLOP/s) | ours s/img (GFLOP/s) | ratio | "
          "ours channels-last s/img | ratio | best / matmul | outputs vs reference (ours; channels-last) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = {key: r["gflop"] / r[key] for key in ("ref", "ours", "ours_cl")}
        print(f"| {r['stage']} | {r['network']} | {r['settings']} | {r['gflop']:.0f} | {r['ref']:.2f} "
              f"({rate['ref']:.0f}) | {r['ours']:.2f} ({rate['ours']:.0f}) | **{r['ref'] / r['ours']:.2f}x** | "
              f"{r['ours_cl']:.2f} | {r['ref'] / r['ours_cl']:.2f}x | "
              f"{100 * max(rate['ours'], rate['ours_cl']) / peak:.0f} % | {r['outputs']}; {r['outputs_cl']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 image, scale 0.5 only, pad 256 (see the docstring)")
    parser.add_argument("--images", type=int, default=None, help="images per stage (default 2; --quick: 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--workers", type=int, default=None, help="ours: DataLoader workers (default: 0 on CPU, "
                        "where no core is free to overlap the decoding with, 2 on CUDA)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each formulation, best kept (default 2)")
    parser.add_argument("--amp", action="store_true", help="ours: bf16 autocast (CUDA only)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.amp and device.type != "cuda":
        parser.error("--amp needs a CUDA device")
    torch.backends.cudnn.benchmark = True  # as the stages run (wsss.process.setup)
    args.images = args.images or (1 if args.quick else 2)
    args.workers = args.workers if args.workers is not None else 2 * (device.type == "cuda")
    args.matmul_n = 4096 if device.type == "cpu" else 8192
    peak = matmul_gflops(device, args.matmul_n)
    with tempfile.TemporaryDirectory() as folder:
        data = JpegData(Path(folder), args.images)
        rows = [bench_stage(name.strip(), data, args, device) for name in args.stages.split(",")]
    print_table(rows, peak, args, device)


if __name__ == "__main__":
    main()
