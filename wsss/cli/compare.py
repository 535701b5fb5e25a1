"""``wsss compare``."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--split", type=str, default=None, help="Only results on this split.")
@click.option("--all-splits", is_flag=True, help="One table per split instead of refusing mixed splits.")
@click.option("--allow-mixed-data", is_flag=True, help="List results on different datasets together.")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", help="Output format.")
def compare(runs, split, all_splits, allow_mixed_data, fmt) -> None:
    """One table of every evaluated artifact in RUNS: method, stage, split, mIoU, best threshold; for final
    segmentation also init, MS/flip and CRF."""
    from wsss.stages.compare import CompareConfig, format_rows, run

    grouped = run(CompareConfig(runs=tuple(runs), split=split, all_splits=all_splits,
                                allow_mixed_data=allow_mixed_data, format=fmt))
    for i, (s, rows) in enumerate(grouped.items()):
        if fmt == "text" and len(grouped) > 1:
            click.echo(("\n" if i else "") + f"split {s}:")
        click.echo(format_rows(rows, fmt))
