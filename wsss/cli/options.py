"""Options shared by several commands, defined once. Every option defaults to ``None`` (= not given), so a
config file or a recipe value is never overridden by a default the user did not type."""
from __future__ import annotations

from pathlib import Path

import click



class FloatList(click.ParamType):
    """A comma-separated list of positive floats, e.g. ``1,0.5,1.5,2``."""

    name = "FLOATS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(float(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if not values:
            self.fail("expected at least one number", param, ctx)
        if any(not v > 0 for v in values):
            self.fail(f"every value must be > 0, got {value!r}", param, ctx)
        return values


FLOATS = FloatList()
POSITIVE = click.FloatRange(min=0, min_open=True)
COUNT = click.IntRange(min=1)


def value_type(kind: str, hint: type = float) -> click.ParamType:
    """The click type of a config field's ``type`` (see :func:`wsss.config.option`); ``hint`` is its annotation.

    ``positive`` (> 0), ``non_negative`` (>= 0, int or float by the annotation), ``count`` (int >= 1), ``fraction``
    (in [0, 1]), ``floats`` (comma-separated positives), ``logt`` (0..16), ``choice:a|b``, ``backbone`` (the
    registry's backbones), ``model:FAMILY`` (the registry's networks of a family).
    """
    if kind.startswith("choice:"):
        return click.Choice(kind.split(":", 1)[1].split("|"))
    if kind in ("backbone",) or kind.startswith("model:"):
        from wsss.models.registry import list_models

        names = (list_models(kind="backbone") if kind == "backbone"
                 else list_models(kind="network", family=kind.split(":", 1)[1]))
        return click.Choice(names)
    types = {"positive": POSITIVE, "count": COUNT, "fraction": click.FloatRange(0, 1), "floats": FLOATS,
             "logt": click.IntRange(min=0, max=16),
             "non_negative": click.IntRange(min=0) if hint is int else click.FloatRange(min=0)}
    if kind not in types:
        raise ValueError(f"unknown option type {kind!r}")
    return types[kind]


def _path(exists: bool = False):
    return click.Path(path_type=Path, exists=exists)


data_option = click.option("--data", type=_path(), required=True,
                           help="Prepared dataset folder (from `wsss data prepare` ).")
out_option = click.option("--out", type=_path(), required=True, help="Output folder.")
split_option = click.option("--split", type=str, default=None, help="Split name, e.g. train, val, train_aug.")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                             help="Where to run (default auto: cuda when available).")
workers_option = click.option("--workers", type=click.IntRange(min=0), default=None,
                              help="Worker processes (0 = in the main process).")
seed_option = click.option("--seed", type=int, default=None, help="Random seed.")
config_option = click.option("--config", "config_file", type=_path(), default=None,
                             help="YAML file of option values (flags override it).")
overwrite_option = click.option("--overwrite", is_flag=True, default=None,
                                help="Replace whatever --out holds.")


def common_options(f):
    """--device, --workers, --seed, --config: the options every stage command takes."""
    for opt in reversed((device_option, workers_option, seed_option, config_option)):
        f = opt(f)
    return f


def flags(**kwargs) -> dict:
    """The options the user actually gave (drop ``None`` and the ``config_file`` entry)."""
    return {k: v for k, v in kwargs.items() if v is not None and k != "config_file"}


def train_options(f):
    """The loop options every ``* train`` command takes (engine settings of :class:`wsss.engine.TrainConfig`)."""
    opts = (
        click.option("--lr", type=POSITIVE, default=None, help="Base learning rate."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="Weight decay."),
        click.option("--batch-size", type=COUNT, default=None,
                     help="GLOBAL batch size (split across processes under torchrun)."),
        click.option("--epochs", type=COUNT, default=None, help="Training epochs."),
        click.option("--max-iters", type=COUNT, default=None,
                     help="Stop after this many iterations (replaces epochs for the LR schedule too)."),
        click.option("--crop", type=COUNT, default=None, help="Training crop size in pixels."),
        click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None,
                     help="Mixed precision on CUDA."),
        click.option("--psa-momentum-quirk/--no-psa-momentum-quirk", default=None,
                     help="Reproduce PSA/SEAM's SGD momentum = weight decay (published recipe) or use 0.9."),
        click.option("--val-split", type=str, default=None, help="Split validated after each epoch."),
        click.option("--log-every", type=COUNT, default=None, help="Iterations between log lines."),
        click.option("--ckpt-every", type=click.IntRange(min=0), default=None,
                     help="Iterations between resume checkpoints (0 = at epoch ends only)."),
        click.option("--resume", is_flag=True, default=None, help="Continue the partial run in --out."),
        overwrite_option,
    )
    for opt in reversed(opts):
        f = opt(f)
    return f
