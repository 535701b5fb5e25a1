"""``wsss crf labels``: dense-CRF pseudo labels from CAMs (PSA/SEAM low and high alpha)."""
from __future__ import annotations

import click

from wsss.cli.options import (POSITIVE, config_option, data_option, flags, out_option, overwrite_option,
                              split_option, workers_option)

NON_NEGATIVE = click.FloatRange(min=0)


@click.group("crf")
def crf() -> None:
    """Dense-CRF pseudo labels from CAMs."""


@crf.command("labels")
@data_option
@split_option
@click.option("--cams", type=click.Path(), required=True, help="A `cam` artifact (from `wsss cam infer`).")
@click.option("--alpha", type=POSITIVE, default=None,
              help="Required. Background exponent: (1 - max CAM)^alpha; low (4) = confident foreground, high "
                   "(PSA 32, SEAM 24) = confident background.")
@out_option
@click.option("--gaussian-sxy", type=POSITIVE, default=None, help="Gaussian kernel width in pixels (default 3).")
@click.option("--gaussian-compat", type=NON_NEGATIVE, default=None, help="Gaussian Potts weight (default 3).")
@click.option("--bilateral-sxy", type=POSITIVE, default=None, help="Bilateral kernel width in pixels (default 80).")
@click.option("--bilateral-srgb", type=POSITIVE, default=None, help="Bilateral colour width (default 13).")
@click.option("--bilateral-compat", type=NON_NEGATIVE, default=None, help="Bilateral Potts weight (default 10).")
@click.option("--iterations", type=click.IntRange(min=0), default=None, help="Mean-field iterations (default 10).")
@workers_option
@overwrite_option
@config_option
def labels(config_file, **kwargs) -> None:
    """CRF labels of every image of a split from its CAMs, as a `label` artifact."""
    from wsss.config import resolve
    from wsss.stages.crf_labels import CrfLabelsConfig, run

    m = run(resolve(CrfLabelsConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(f"crf labels: {m.num_items} label PNGs ({m.split}, alpha {m.config['alpha']:g}) in {m.path}")
