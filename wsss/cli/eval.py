"""``wsss eval``: mIoU of label PNGs, or of CAMs with a background threshold or a threshold sweep."""
from __future__ import annotations

from pathlib import Path

import click

from wsss.cli.options import POSITIVE, config_option, data_option, flags, split_option, workers_option


class ThresholdRange(click.ParamType):
    """``START,STOP,STEP`` for the --curve sweep, e.g. ``0,0.6,0.01`` (STOP included)."""

    name = "START,STOP,STEP"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not START,STOP,STEP (three numbers)", param, ctx)
        if len(values) != 3 or not values[2] > 0 or values[1] < values[0]:
            self.fail(f"{value!r}: expected START,STOP,STEP with STEP > 0 and STOP >= START", param, ctx)
        return values


@click.command("eval")
@data_option
@split_option
@click.option("--pred", type=click.Path(path_type=Path), default=None,
              help="Folder of label PNGs ({id}.png, palette or grayscale): a `label` artifact or any tool's output.")
@click.option("--cams", type=click.Path(path_type=Path), default=None, help="A `cam` artifact folder.")
@click.option("--curve", is_flag=True, default=None,
              help="With --cams: sweep the constant background threshold and report the best (tuned on GT).")
@click.option("--thresholds", type=ThresholdRange(), default=None,
              help="The --curve sweep as START,STOP,STEP (default 0,0.6,0.01; STOP included).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="With --cams: constant background score (default 0.2, PSA's out_cam_pred).")
@click.option("--alpha", type=POSITIVE, default=None,
              help="With --cams: background (1 - max CAM)^alpha instead of a constant.")
@click.option("--allow-missing", is_flag=True, default=None,
              help="Score the ids that have a file; list the missing ones in metrics.json.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for metrics.json (default: the --pred/--cams folder).")
@workers_option
@config_option
def eval_cmd(config_file, **kwargs) -> None:
    """mIoU (with and without background) of one split, written to metrics.json.

    Exactly one of --pred or --cams. --cams alone uses a constant background of 0.2 (or --threshold T, or
    --alpha A for (1 - max)^A); --cams --curve sweeps the threshold.
    """
    from wsss.config import resolve
    from wsss.stages.eval import EvalConfig, format_report, run

    metrics = run(resolve(EvalConfig, config_file=config_file, flags=flags(**kwargs)))
    click.echo(format_report(metrics))
