"""``wsss viz``."""
from __future__ import annotations

from pathlib import Path

import click

from wsss.cli.options import data_option, out_option


@click.command("viz")
@data_option
@click.option("--split", type=str, required=True, help="Split whose ids are shown.")
@click.option("--cams", type=click.Path(path_type=Path), default=None, help="A `cam` artifact.")
@click.option("--labels", type=click.Path(path_type=Path), default=None, help="A `label` artifact.")
@out_option
@click.option("--limit", type=click.IntRange(min=1), default=12, help="How many images.")
def viz(data, split, cams, labels, out, limit) -> None:
    """Overlays of CAMs or labels on their images, with the ground truth, as OUT/index.html."""
    from wsss.stages.viz import VizConfig, run

    page = run(VizConfig(data=data, split=split, cams=cams, labels=labels, out=out, limit=limit))
    click.echo(f"viz: {page}")
