"""Stage commands built from the stage table and the stage configs: nothing is declared twice.

``wsss <group> <command>`` runs the stage of its row in :data:`wsss.stages.table.STAGES`. Its options are the fields
of the stage's config declared with :func:`wsss.config.option`: ``--field-name``, the help of the field, the
default shown from the dataclass (the option itself defaults to "not given", so a ``--config`` file or a recipe
is never overridden by a default the user did not type), plus ``--config``. The command resolves the config
(default < ``--config`` < flags, or the stage's own ``resolve_config``), runs the stage and prints its summary.
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path

import click

from wsss.cli.options import flags, value_type
from wsss.config import field_metadata
from wsss.stages.table import GROUPS, group_rows

_MISSING = dataclasses.MISSING


def _hint(cls: type, name: str):
    """The field's type with Optional removed, and whether it is a bool."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_option_for(cls: type, f: dataclasses.Field) -> click.Option:
    """The click option of one config field (see the module docstring)."""
    meta = field_metadata(cls, f.name)
    hint = _hint(cls, f.name)
    flag = "--" + f.name.replace("_", "-")
    help_text = meta.get("help", "")
    if f.default is not _MISSING and f.default is not None and meta.get("type") != "flag" and not meta.get("required"):
        help_text += f"  [default: {_default_text(f.default)}]"
    if meta.get("type") == "flag":
        return click.Option([flag, f.name], is_flag=True, default=None, help=help_text)
    if hint is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=None, help=help_text)
    kind = meta.get("type") or ("floats" if typing.get_origin(hint) is tuple else None)
    param_type = value_type(kind, hint) if kind else click.Path(path_type=Path) if hint is Path else hint
    if meta.get("required"):  # no default at all: click 8.2+ takes an explicit None as a given default
        return click.Option([flag, f.name], type=param_type, required=True, help=help_text)
    return click.Option([flag, f.name], type=param_type, default=None, help=help_text)


def config_options(cls: type) -> list[click.Option]:
    """Options for every field of ``cls`` declared with :func:`wsss.config.option`: the required ones first, then
    the others in field order."""
    fields = [f for f in dataclasses.fields(cls) if "help" in field_metadata(cls, f.name)]
    fields.sort(key=lambda f: not field_metadata(cls, f.name).get("required"))  # required ones first, stable
    return [config_option_for(cls, f) for f in fields]


def stage_command(row) -> click.Command:
    """``wsss <group> <command>`` for one row of the stage table."""
    module = importlib.import_module(row.module)
    stage = module.STAGE

    def callback(config_file=None, **kwargs):
        from wsss.config import resolve

        given = flags(**kwargs)
        resolver = getattr(stage, "resolve_config", None)
        cfg = (resolver(config_file=config_file, flags=given) if resolver is not None
               else resolve(stage.config, config_file=config_file, flags=given))
        click.echo(stage.summary(stage.run(cfg)))

    params = [*config_options(stage.config),
              click.Option(["--config", "config_file"], type=click.Path(path_type=Path), default=None,
                           help="YAML file of option values (flags override it).")]
    return click.Command(row.command, callback=callback, params=params, help=row.help)


def stage_group(group: str) -> click.Group:
    """The click group of one command group, with a command per row of the table in that group."""
    commands = {row.command: stage_command(row) for row in group_rows(group)}
    return click.Group(group, commands=commands, help=GROUPS[group])
