"""``wsss pipeline run``."""
from __future__ import annotations

from pathlib import Path

import click

from wsss.cli.options import data_option, out_option


@click.group("pipeline")
def pipeline() -> None:
    """Run YAML recipes that chain stages (see pipelines/)."""


@pipeline.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@data_option
@out_option
@click.option("--from", "start", type=str, default=None, help="First stage to run.")
@click.option("--until", "stop", type=str, default=None, help="Last stage to run.")
@click.option("--set", "overrides", multiple=True, help="Override a recipe value: STAGE.OPTION=VALUE (repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Device for every stage.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Workers for every stage.")
@click.option("--reuse", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Another run folder: a stage not done yet whose twin (same stage, config and inputs) is "
                   "complete there is copied instead of run (repeatable).")
def run_cmd(recipe, data, out, start, stop, overrides, device, workers, reuse) -> None:
    """Run RECIPE's stages into OUT/<stage>/, skipping those already complete."""
    from wsss.stages.pipeline_run import PipelineRunConfig, format_results, run

    results = run(PipelineRunConfig(recipe=recipe, data=data, out=out, start=start, stop=stop,
                                    overrides=tuple(overrides), device=device, workers=workers,
                                    reuse=tuple(reuse)))
    click.echo(format_results(results))
