"""``wsss demo``."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("wsss-demo"), show_default=True,
              help="Folder for the toy data, the runs and the report (reused when rerun).")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Toy train images.")
@click.option("--n-val", type=click.IntRange(min=1), default=None, help="Toy val images.")
@click.option("--size", type=click.IntRange(min=16), default=None, help="Toy image size in pixels.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data-loading / CRF workers.")
def demo(out, n_train, n_val, size, device, workers) -> None:
    """Toy data + every toy pipeline (pipelines/toy_*.yaml) on CPU; prints the comparison table and writes a report."""
    from wsss.cli.options import flags
    from wsss.config import resolve
    from wsss.stages.demo import DemoConfig, run

    cfg = resolve(DemoConfig, flags=flags(out=out, n_train=n_train, n_val=n_val, size=size, device=device,
                                          workers=workers))
    tables, report = run(cfg)
    click.echo(tables)
    click.echo(f"\nreport: {report}")
