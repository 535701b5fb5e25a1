"""``wsss aff train`` (AffinityNet) and ``wsss aff infer`` (random walk)."""
from __future__ import annotations

import click

from wsss.cli.options import (POSITIVE, common_options, data_option, flags, out_option, overwrite_option, split_option,
                              train_options)


@click.group("aff")
def aff() -> None:
    """Train AffinityNet and refine CAMs by random walk."""


@aff.command("infer")
@data_option
@split_option
@click.option("--cams", type=click.Path(), required=True, help="A `cam` artifact (from `wsss cam infer`).")
@click.option("--weights", type=click.Path(), required=True, help="Our AffinityNet checkpoint or PSA's res38_aff.pth.")
@out_option
@click.option("--backbone", type=str, default=None, help="Backbone of an original (non-wsss) weights file.")
@click.option("--alpha", type=POSITIVE, default=None, help="Background exponent (1 - max CAM)^alpha (default 16).")
@click.option("--beta", type=POSITIVE, default=None, help="Power applied to the affinities (default 8).")
@click.option("--logt", type=click.IntRange(min=0, max=16), default=None, help="The walk takes 2^logt steps (default 8).")
@click.option("--radius", type=click.IntRange(min=2), default=None, help="Pair radius at stride 8 (default 5).")
@overwrite_option
@common_options
def infer(config_file, **kwargs) -> None:
    """Random-walk labels of every image of a split from its CAMs, as a `label` artifact."""
    from wsss.config import resolve
    from wsss.stages.aff_infer import AffInferConfig, run

    m = run(resolve(AffInferConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"aff infer: {m.num_items} label PNGs ({m.split}) in {m.path}")


@aff.command("train")
@data_option
@split_option
@click.option("--la", type=click.Path(), required=True, help="Low-alpha CRF `label` artifact (confident foreground).")
@click.option("--ha", type=click.Path(), required=True, help="High-alpha CRF `label` artifact (confident background).")
@click.option("--backbone", type=str, default=None, help="wideresnet38 (default), vgg16, resnet50, resnet101, tiny.")
@click.option("--init-weights", type=click.Path(), default=None, help="ImageNet initialisation file.")
@out_option
@train_options
@common_options
def train(config_file, **kwargs) -> None:
    """Train AffinityNet on pair labels from the la/ha CRF labels (PSA recipe by default)."""
    from wsss.config import resolve
    from wsss.stages.aff_train import AffTrainConfig, run

    m = run(resolve(AffTrainConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"aff train: {m.path}/{m.extra.get('final', 'final.pt')} ({m.extra.get('iterations')} iterations)")
