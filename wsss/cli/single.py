"""``wsss single train`` and ``wsss single infer``."""
from __future__ import annotations

import click

from wsss.cli.options import (COUNT, FLOATS, POSITIVE, common_options, data_option, flags, out_option,
                              overwrite_option, split_option, train_options)

MODEL_CHOICE = click.Choice(["single_stage", "bsl"])


@click.group("single")
def single() -> None:
    """Train the single-stage network (Araslanov & Roth 2020) or its baseline, and infer segmentation masks."""


@single.command("train")
@data_option
@split_option
@click.option("--model", type=MODEL_CHOICE, default=None, help="single_stage (default) or bsl (classification only).")
@click.option("--backbone", type=str, default=None, help="wideresnet38 (default), vgg16, resnet50, resnet101, tiny.")
@click.option("--init-weights", type=click.Path(), default=None, help="ImageNet initialisation file of the backbone.")
@out_option
@train_options
@common_options
def train(config_file, **kwargs) -> None:
    """Train on image-level labels (the reference recipe of the backbone by default)."""
    from wsss.stages.single_train import resolve_config, run

    m = run(resolve_config(config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"single train: {m.path}/{m.extra.get('final', 'final.pt')} ({m.extra.get('iterations')} iterations, "
               f"best {m.extra.get('best')})")


@single.command("infer")
@data_option
@split_option
@click.option("--weights", type=click.Path(), required=True,
              help="Our checkpoint, or the authors' model_enc_e020Xs0.928.pth.")
@out_option
@click.option("--model", type=MODEL_CHOICE, default=None, help="Network of an original (non-wsss) weights file.")
@click.option("--backbone", type=str, default=None, help="Backbone of an original (non-wsss) weights file.")
@click.option("--scales", type=FLOATS, default=None, help="Comma-separated scales (default: the backbone's recipe).")
@click.option("--no-flip", "flip", flag_value=False, default=None, help="Do not add flipped inputs.")
@click.option("--pad-size", type=COUNT, default=None, help="Side every scaled input is centre-padded to.")
@click.option("--fp-cut", type=click.FloatRange(0, 1), default=None,
              help="Class probability above which a class is in the image label (without --clean).")
@click.option("--bg-pow", type=POSITIVE, default=None, help="Power applied to the merged background probability.")
@click.option("--clean/--no-clean", default=None, help="Use the ground-truth image labels (\"-clean\" masks).")
@click.option("--crf", is_flag=True, default=None, help="Dense-CRF post-processing with the reference parameters.")
@overwrite_option
@common_options
def infer(config_file, **kwargs) -> None:
    """Multi-scale + flip segmentation of every image of a split, as a `label` artifact."""
    from wsss.config import resolve
    from wsss.stages.single_infer import SingleInferConfig, run

    m = run(resolve(SingleInferConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"single infer: {m.num_items} label PNGs ({m.split}) in {m.path}")
