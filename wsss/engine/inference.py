"""The skeleton every per-image stage shares (``cam infer``, ``aff infer``, ``single infer``, ``crf labels``,
``cam import``, and the methods added after them): required options, dataset and split, weights -> network (our
checkpoints and the authors' releases, one loader), device and ranks, the per-image loop (this rank's ids, resume,
atomic items in the artifact kind's format), the manifest last.

A stage declares ``name``, ``config``, ``kind`` (the artifact it writes), ``model`` (the registry name of the
network it loads, or None for none) and :meth:`InferenceStage.predict` (one id -> one item value: ``(cams,
classes)`` for ``cam``, an (H, W) uint8 map for ``label``); optionally :meth:`check_inputs`, :meth:`input_artifacts`,
:meth:`settle` (config values that depend on the loaded network), :meth:`InferenceStage.load` (the CPU-side part of
an id: decoding, resizing, normalising), :meth:`compute` (to batch or parallelise over ids) and :meth:`after` (a
follow-up artifact).

The network passes run under ``torch.inference_mode``; with ``--workers N > 0`` the ``load`` of the next ids runs
in N DataLoader worker processes while the main process runs the network on the current one (items are still
written in the order of the ids; ``--workers 0`` loads in the main process, just before each ``predict``).
``--channels-last`` runs the network in channels-last memory format (outputs equal within 1e-5 in fp32) and
``--amp`` its forward under bf16 autocast (CUDA only; its outputs are cast back to fp32 for what follows, which
then differs from the fp32 run by bf16 rounding).
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from wsss.artifacts import ITEM_SUFFIX, Manifest, OutputDir, input_record, read_manifest
from wsss.artifacts.items import FORMATS
from wsss.config import identity, option, runtime
from wsss.engine.distributed import DistInfo, barrier, init_distributed, open_output, shard
from wsss.engine.infer_runtime import check_amp, loaded_items, prepare_network
from wsss.errors import UserError
from wsss.process import LOG, setup


def write_items(out: OutputDir, ids: list, dist: DistInfo, compute: Callable[[list], Iterable[tuple[str, Any]]],
                write: Callable[[Path, Any], None], *, split: Optional[str],
                extra: Optional[dict] = None) -> Manifest:
    """Write the items of ``ids`` that this rank owns and that are not there yet, then complete on rank 0.

    Args:
        compute: ``todo ids -> iterable of (id, value)``.
        write: ``(path, value) -> None`` writes one item file.

    A complete folder (``out.state == "done"``) is left alone. Items are written through
    :meth:`OutputDir.write_item` (temporary name, then rename), so a killed run resumes with what is missing.
    """
    if out.state == "done":
        LOG.info("%s: complete '%s' artifact of the same config and inputs: nothing to do", out.folder, out.kind)
        return read_manifest(out.folder, kind=out.kind)
    suffix = ITEM_SUFFIX[out.kind]
    todo = [i for i in shard(ids, dist) if not out.has_item(i, suffix)]
    LOG.info("%s: %d of %d ids to do on rank %d (%s)", out.stage, len(todo), len(ids), dist.rank, out.state)
    for image_id, value in compute(todo):
        out.write_item(image_id, suffix, lambda path, v=value: write(path, v))
    barrier()
    if dist.is_main:
        out.complete(num_items=len(ids), split=split, extra=extra)
    barrier()
    return read_manifest(out.folder, kind=out.kind)


@dataclasses.dataclass(frozen=True)
class InferStageConfig:
    """The fields of every per-image stage."""

    data: Optional[Path] = option(None, "Prepared dataset folder (from `wsss data prepare`).", required=True)
    split: str = option("train_aug", "Split whose images are processed, e.g. train, val, train_aug.")
    out: Optional[Path] = option(None, "Output folder (the artifact).", required=True)
    device: str = runtime("auto", "Where to run (auto: cuda when available).", type="choice:auto|cpu|cuda")
    workers: int = runtime(0, "Worker processes (0 = in the main process).", type="non_negative")
    seed: int = runtime(0, "Random seed.")
    overwrite: bool = runtime(False, "Replace whatever --out holds.", type="flag")


@dataclasses.dataclass(frozen=True)
class NetworkInferConfig(InferStageConfig):
    """A per-image stage that runs a trained network."""

    weights: Optional[Path] = option(None, "Our checkpoint, or the original authors' released file.", required=True)
    backbone: Optional[str] = option(None, "Backbone of an original (non-wsss) weights file.", type="backbone")
    channels_last: bool = runtime(False, "Run the network in channels-last memory format (fp32 outputs equal within "
                                         "1e-5; faster on some machines).", type="flag")
    amp: bool = option(False, "bf16 autocast on CUDA (faster; outputs change by bf16 rounding).", type="flag")


@dataclasses.dataclass
class Context:
    """What :meth:`InferenceStage.predict` gets: the config, the dataset, the device, the network and its input
    normalisation. :meth:`InferenceStage.load` gets the same without the network (``network`` None)."""

    cfg: Any
    data: Any
    device: Any
    dist: DistInfo
    network: Any = None
    normalization: Any = None


class InferenceStage:
    """The per-image stage skeleton; subclasses declare the method (see the module docstring)."""

    name: str = ""
    config: type = InferStageConfig
    kind: str = "label"
    model: Optional[str] = None
    required: tuple = ("data", "out")

    # ------------------------------------------------------------------------------------- what a stage declares
    def check_inputs(self, cfg, data, ids: list) -> None:
        """Refuse bad inputs before anything is written."""

    def input_artifacts(self, cfg) -> dict:
        """Input files and folders recorded in the manifest (besides ``data``): key -> path."""
        return {"weights": cfg.weights} if self.model is not None else {}

    def load_network(self, cfg, data):
        """The trained network, loaded strictly (our checkpoints and the authors' files), eval mode, on the CPU."""
        from wsss.models.weights import load_network

        return load_network(cfg.weights, model=self.model, backbone=cfg.backbone)

    def settle(self, cfg, network):
        """The config with what depends on the loaded network filled in (e.g. per-backbone defaults)."""
        return cfg

    def load(self, ctx: Context, image_id: str) -> Any:
        """Optional: the CPU-side inputs of one id (image, labels, the scaled and normalised network inputs), run
        in a worker process when ``--workers`` > 0. ``ctx.network`` is None here. A stage that defines it gets the
        result as the third argument of :meth:`predict`. Tensors, NumPy arrays and plain containers of them."""
        raise NotImplementedError

    def predict(self, ctx: Context, image_id: str, loaded: Any = None) -> Any:
        """One id -> its item value; ``loaded`` is :meth:`load`'s result for a stage that defines ``load``."""
        raise NotImplementedError(f"{type(self).__name__} must define predict(ctx, image_id)")

    @property
    def has_load(self) -> bool:
        return type(self).load is not InferenceStage.load

    def compute(self, ctx: Context, todo: list) -> Iterator[tuple[str, Any]]:
        """``(id, item value)`` for every id of ``todo``, in order: one :meth:`predict` per id (of a network stage
        under ``torch.inference_mode``), fed by :func:`~wsss.engine.infer_runtime.loaded_items` for a stage with
        a :meth:`load` step."""
        import torch

        items = loaded_items(self, ctx, todo) if self.has_load else ((image_id, None) for image_id in todo)
        for image_id, loaded in items:
            with torch.inference_mode() if ctx.network is not None else contextlib.nullcontext():
                value = self.predict(ctx, image_id, loaded) if self.has_load else self.predict(ctx, image_id)
            yield image_id, value

    def manifest_extra(self, ctx: Context) -> dict:
        return {"classes": list(ctx.data.classes)}

    def after(self, ctx: Context, manifest: Manifest) -> Manifest:
        """Runs once the artifact is complete (e.g. a second artifact made from the first)."""
        return manifest

    def summary(self, manifest: Manifest) -> str:
        noun = FORMATS[manifest.kind].noun if manifest.kind in FORMATS else "item"
        return f"{self.name.replace('_', ' ')}: {manifest.num_items} {noun}s ({manifest.split}) in {manifest.path}"

    # --------------------------------------------------------------------------------------- what the engine does
    def writer(self, ctx: Context) -> Callable[[Path, Any], None]:
        fmt = FORMATS[self.kind]
        if self.kind == "label":
            return lambda path, labels: fmt.write(path, labels, ctx.data.palette)
        return lambda path, value: fmt.write(path, *value)

    def run(self, cfg) -> Manifest:
        """Write one item per id of ``cfg.split`` into ``cfg.out``; returns the artifact's manifest."""
        from wsss.data.prepared import open_dataset

        missing = [f"--{name}" for name in self.required if getattr(cfg, name) is None]
        if missing:
            raise UserError(f"{self.name.replace('_', ' ')}: missing {', '.join(missing)} (give it as a flag or in "
                            f"--config)")
        if self.model is not None and not Path(cfg.weights).is_file():
            raise UserError(f"--weights {cfg.weights}: file not found")
        data = open_dataset(cfg.data)
        if self.model is not None:  # a checkpoint trained on another class list: refused, naming both
            from wsss.engine.checkpoint import check_classes

            check_classes(cfg.weights, data.classes, cfg.data)
        ids = data.ids(cfg.split)
        self.check_inputs(cfg, data, ids)
        device = setup(cfg.seed, cfg.device)
        check_amp(cfg, device)
        ctx = Context(cfg, data, device, init_distributed(device))
        if self.model is not None:
            ctx.network = prepare_network(self.load_network(cfg, data), cfg, device)
            ctx.normalization = ctx.network.normalization
            ctx.cfg = cfg = self.settle(cfg, ctx.network)
        inputs = {"data": input_record(cfg.data)}
        inputs.update({key: input_record(path) for key, path in self.input_artifacts(cfg).items()})
        out = open_output(cfg.out, ctx.dist, kind=self.kind, stage=self.name, config=identity(cfg), inputs=inputs,
                          overwrite=bool(cfg.overwrite))
        manifest = write_items(out, ids, ctx.dist, lambda todo: self.compute(ctx, todo), self.writer(ctx),
                               split=cfg.split, extra=self.manifest_extra(ctx))
        return self.after(ctx, manifest)
