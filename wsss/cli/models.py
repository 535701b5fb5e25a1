"""``wsss models list``: the registered networks, their parameter counts and the weight files they take."""
from __future__ import annotations

import click


@click.group("models")
def models() -> None:
    """List the registered networks."""


@models.command("list")
def list_cmd() -> None:
    """Print every backbone and network (per backbone) with parameters and expected weight files."""
    from wsss.models.registry import broken_modules, list_models, model_entry, parameter_count

    rows = [("name", "backbone", "parameters", "ImageNet init", "original release")]
    for name in list_models(kind="backbone"):
        entry = model_entry(name)
        rows.append((name, "-", f"{parameter_count(name):,}", entry.init_weights or "(none: from scratch)", "-"))
    for name in list_models(kind="network"):
        entry = model_entry(name)
        for backbone in entry.backbones or (None,):
            kwargs = {"backbone": backbone} if backbone else {}
            init = (model_entry(backbone).init_weights or "(none: from scratch)") if backbone else "-"
            rows.append((name, backbone or "-", f"{parameter_count(name, **kwargs):,}", init,
                         entry.released.get(backbone, "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for module, error in broken_modules().items():
        click.echo(f"warning: {module} failed to import ({error})", err=True)
