"""Stage configs: frozen dataclasses resolved as default < recipe < ``--config`` file < command-line flag.

A field declared with :func:`option` is also a command-line option (``--field-name``), declared once, next to its
default: the commands are generated from the config (:mod:`wsss.cli.stage_commands`). A field declared with
:func:`runtime` (device, workers, logging) does not change what a stage produces, so it is left out of
:func:`identity`, the part of the config that decides whether an output folder can be reused.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

from wsss.errors import UserError

C = TypeVar("C")


def option(default: Any = None, help: str = "", *, type: Optional[str] = None, required: bool = False,
           runtime: bool = False) -> Any:
    """A config field that is also a command-line option ``--field-name``.

    Args:
        default: the field's default (shown in ``--help``; the option itself defaults to "not given").
        help: one line for ``--help``; it does not restate the default.
        type: a value type of :mod:`wsss.cli.options` beyond what the annotation says (``positive``, ``count``,
            ``fraction``, ``backbone``, ``choice:a|b``, ...).
        required: the command refuses to run without it.
        runtime: the value does not change what the stage produces (see :func:`runtime`).
    """
    metadata = {"help": help, "type": type, "required": required}
    if runtime:
        metadata["runtime"] = True
    return dataclasses.field(default=default, metadata=metadata)


def runtime(default: Any = None, help: str = "", *, type: Optional[str] = None) -> Any:
    """A config field that does not affect results (device, workers, ...); with ``help``, also an option."""
    if help:
        return option(default, help, type=type, runtime=True)
    return dataclasses.field(default=default, metadata={"runtime": True})


PRESET_FIELD = "recipe"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe preset a config offers through its ``recipe`` field (``--recipe NAME``).

    A config class declares ``PRESETS: ClassVar[Mapping[str, Preset]]`` and a ``recipe`` field made by
    :func:`preset_option`; :func:`resolve` then layers default < preset < recipe values < ``--config`` < flags.

    Attributes:
        values: option values of the preset (field name -> value).
        summary: its line in ``--help``.
        departures: what differs from the reference it reproduces (documentation).
    """

    values: Mapping[str, Any]
    summary: str
    departures: tuple = ()


def preset_option(presets: Mapping[str, Preset], default: Optional[str], help: str) -> Any:
    """The ``recipe`` field: a choice of the preset names, each listed with its summary in ``--help``."""
    listing = "; ".join(f"{name}: {p.summary}" for name, p in presets.items())
    return option(default, f"{help} {listing}.", type="choice:" + "|".join(presets))


def _preset_layer(cls: type, layers: list) -> Optional[tuple]:
    """The preset named by the last layer that names one (else the field's default), as a layer."""
    presets = getattr(cls, "PRESETS", None)
    if not presets:
        return None
    name = next((layer[PRESET_FIELD] for layer, _ in reversed(layers) if layer.get(PRESET_FIELD) is not None),
                cls.__dataclass_fields__[PRESET_FIELD].default)
    if name is None:
        return None
    if name not in presets:
        raise UserError(f"unknown recipe {name!r} for {cls.__name__} (known: {', '.join(presets)})")
    return dict(presets[name].values), f"recipe preset {name!r}"


def field_metadata(cls: type, name: str) -> Mapping:
    """The metadata of field ``name``, from the nearest class of ``cls``'s MRO that declared it with some (a subclass
    that only changes a default, ``lr: float = 0.1``, keeps the base field's help and type)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            return f.metadata
    return {}


def load_yaml(path: Path) -> dict:
    """Read a YAML mapping; a missing file or another top-level type is a :class:`UserError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def _coerce(cls: type, name: str, value: Any, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    hint = hints.get(name)
    origin = typing.get_origin(hint)
    if value is None:
        return None
    if origin in (tuple, typing.Tuple) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return tuple(args[0](v) if args and args[0] in (int, float, str) else v for v in value)
    if origin in (tuple, typing.Tuple) and isinstance(value, str):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        conv = args[0] if args and args[0] in (int, float, str) else str
        try:
            return tuple(conv(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise UserError(f"{source}: '{name}' expects a comma-separated list, got {value!r}") from None
    base = hint if origin is None else None
    if origin is typing.Union:
        non_none = [a for a in typing.get_args(hint) if a is not type(None)]
        base = non_none[0] if len(non_none) == 1 else None
    if base in (int, float, str, bool, Path):
        if base is bool and not isinstance(value, bool):
            raise UserError(f"{source}: '{name}' expects true or false, got {value!r}")
        if base is int and isinstance(value, float) and not value.is_integer():
            raise UserError(f"{source}: '{name}' expects an integer, got {value!r}")
        try:
            return base(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: '{name}' expects {base.__name__}, got {value!r}") from None
    return value


def resolve(cls: type[C], *, recipe: Optional[Mapping] = None, config_file: Optional[Path] = None,
            flags: Optional[Mapping] = None) -> C:
    """Build ``cls`` from its defaults, then a recipe mapping, a YAML file, and flags (``None`` = not given).

    A class with ``PRESETS`` (see :class:`Preset`) gets the values of the preset its ``recipe`` names right above
    its defaults. Unknown keys are a :class:`UserError` naming the key and where it came from.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict = {}
    layers = [(recipe or {}, "recipe")]
    if config_file is not None:
        layers.append((load_yaml(config_file), str(config_file)))
    layers.append(({k: v for k, v in (flags or {}).items() if v is not None}, "command line"))
    preset = _preset_layer(cls, layers)
    if preset is not None:
        layers.insert(0, preset)
    for layer, source in layers:
        unknown = sorted(set(layer) - names)
        if unknown:
            raise UserError(f"{source}: unknown option(s) {', '.join(unknown)} for {cls.__name__} "
                            f"(known: {', '.join(sorted(names))})")
        for k, v in layer.items():
            values[k] = _coerce(cls, k, v, source)
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"{cls.__name__}: {e}") from None


def resolve_layered(cls: type[C], preset: Callable[[C], Mapping], *, recipe: Optional[Mapping] = None,
                    config_file: Optional[Path] = None, flags: Optional[Mapping] = None) -> C:
    """Like :func:`resolve`, with a layer of defaults that depends on the values given: ``preset(first)``, where
    ``first`` is the config resolved without it, goes under ``recipe`` (default < preset < recipe < file < flags).
    """
    first = resolve(cls, recipe=recipe, config_file=config_file, flags=flags)
    layer = dict(preset(first))
    if not layer:
        return first
    return resolve(cls, recipe={**layer, **(recipe or {})}, config_file=config_file, flags=flags)


def to_dict(cfg: Any) -> dict:
    """The full config as JSON-friendly values (paths as strings, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out


def identity(cfg: Any) -> dict:
    """What decides whether an existing output can be reused: the config without runtime-only fields and
    without ``out`` (the folder itself), paths resolved so that ``runs/x`` and ``/abs/runs/x`` agree."""
    cls = type(cfg)
    runtime_names = {f.name for f in dataclasses.fields(cfg) if field_metadata(cls, f.name).get("runtime")} | {"out"}
    paths = {f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), Path)}
    return {k: str(Path(v).resolve()) if k in paths else v
            for k, v in to_dict(cfg).items() if k not in runtime_names}
