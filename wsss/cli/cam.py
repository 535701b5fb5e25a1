"""``wsss cam train`` and ``wsss cam infer``."""
from __future__ import annotations

import click

from wsss.cli.options import (FLOATS, common_options, data_option, flags, out_option, overwrite_option,
                              split_option, train_options)


@click.group("cam")
def cam() -> None:
    """Train the CAM classifier (PSA) and infer multi-scale CAMs."""


@cam.command("train")
@data_option
@split_option
@click.option("--backbone", type=str, default=None, help="wideresnet38 (default), vgg16, resnet50, resnet101, tiny.")
@click.option("--init-weights", type=click.Path(), default=None, help="ImageNet initialisation file.")
@out_option
@train_options
@common_options
def train(config_file, **kwargs) -> None:
    """Train the classifier on image-level labels (PSA recipe by default)."""
    from wsss.config import resolve
    from wsss.stages.cam_train import CamTrainConfig, run

    m = run(resolve(CamTrainConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"cam train: {m.path}/{m.extra.get('final', 'final.pt')} ({m.extra.get('iterations')} iterations)")


@cam.command("infer")
@data_option
@split_option
@click.option("--weights", type=click.Path(), required=True, help="Our checkpoint or PSA's res38_cls.pth.")
@out_option
@click.option("--backbone", type=str, default=None, help="Backbone of an original (non-wsss) weights file.")
@click.option("--scales", type=FLOATS, default=None, help="Comma-separated scales (default 1,0.5,1.5,2).")
@click.option("--no-flip", "flip", flag_value=False, default=None, help="Do not add flipped inputs.")
@click.option("--save-png", is_flag=True, default=None, help="Also write label PNGs (constant background) to OUT/png.")
@click.option("--png-threshold", type=click.FloatRange(0, 1), default=None, help="Background score for --save-png.")
@overwrite_option
@common_options
def infer(config_file, **kwargs) -> None:
    """Multi-scale + flip CAMs of every image of a split, as a `cam` artifact."""
    from wsss.config import resolve
    from wsss.stages.cam_infer import CamInferConfig, run

    m = run(resolve(CamInferConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"cam infer: {m.num_items} CAM files ({m.split}) in {m.path}")


@cam.command("import")
@data_option
@click.option("--split", type=str, required=True, help="Split whose ids the .npy files must cover.")
@click.option("--npy", type=click.Path(), required=True, help="Folder of the reference code's {id}.npy dicts.")
@click.option("--format", "format", type=click.Choice(["cam", "crf"]), required=True,
              help="cam: PSA/SEAM out_cam (0-based class keys) -> cam artifact; "
                   "crf: out_la_crf/out_ha_crf (0 = background) -> label artifact.")
@out_option
@overwrite_option
def import_cmd(**kwargs) -> None:
    """Import the reference code's .npy dicts (PSA/SEAM CAMs or CRF results) as a wsss artifact."""
    from wsss.config import resolve
    from wsss.stages.cam_import import CamImportConfig, run

    m = run(resolve(CamImportConfig, flags=flags(**kwargs)))
    click.echo(f"cam import: {m.num_items} items ({m.kind}) in {m.path}")
