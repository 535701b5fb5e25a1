"""One small registry of networks and backbones, found by name.

Builders are keyword-only (``build_model("cam", backbone="vgg16")``); a duplicate name is an error; every
module of :mod:`wsss.models` is imported on first use, so a network registers itself by being defined. The
registry itself does not import torch (``wsss --help`` stays fast).

Example:
    >>> from wsss.models.registry import build_model, list_models
    >>> "tiny" in list_models(kind="backbone")
    True
    >>> net = build_model("cam", backbone="tiny", num_classes=3)
"""
from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from wsss.errors import UserError

KINDS = ("backbone", "network")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one name.

    Attributes:
        name: registry name.
        builder: keyword-only callable (a class or a function) returning the ``nn.Module``.
        kind: ``"backbone"`` or ``"network"``.
        summary: one line (the first line of the builder's docstring).
        backbones: for networks, the backbones they accept (``backbone=`` keyword); empty for backbones.
        init_weights: for backbones, the file name of the ImageNet initialisation the references use.
        released: backbone name -> file name of the original authors' trained release that loads into it.
        family: for networks, the training stage family they belong to (``single`` for single_stage, bsl and
            wsfcn: the ``--model`` choices of ``wsss single``); the name itself by default.
    """

    name: str
    builder: Callable[..., Any]
    kind: str
    summary: str
    backbones: tuple = ()
    init_weights: str = ""
    released: dict = field(default_factory=dict)
    family: str = ""


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False
_BROKEN: dict[str, str] = {}  # module -> import error, reported whenever a name is not found


def register_model(name: str, *, kind: str = "network", backbones: tuple = (), init_weights: str = "",
                   released: Optional[dict] = None, family: str = "") -> Callable:
    """Decorator registering a keyword-only builder (class or function) under ``name``.

    Raises:
        ValueError: for a duplicate name, an unknown kind, or a builder taking positional parameters.
    """
    if kind not in KINDS:
        raise ValueError(f"register_model({name!r}): kind must be one of {KINDS}, got {kind!r}")

    def decorate(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"register_model: the name {name!r} is already registered "
                             f"(by {_REGISTRY[name].builder.__module__})")
        params = list(inspect.signature(builder).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if positional:
            raise ValueError(f"register_model({name!r}): builders are keyword-only, {positional} are positional")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelEntry(name=name, builder=builder, kind=kind, summary=doc.split("\n")[0],
                                     backbones=tuple(backbones), init_weights=init_weights,
                                     released=dict(released or {}), family=family or name)
        return builder

    return decorate


def _load_all() -> None:
    """Import every module of :mod:`wsss.models` once, so that each registers its networks.

    A module that fails to import does not take the others down: its error is logged and repeated in the
    message for any name that is then not found (see :func:`broken_modules`).
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import wsss.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = f"{package.__name__}.{info.name}"
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - reported, never swallowed
            _BROKEN[module] = f"{type(e).__name__}: {e}"
            logging.getLogger("wsss").warning("models: %s failed to import (%s)", module, _BROKEN[module])


def broken_modules() -> dict[str, str]:
    """Model modules that failed to import: module name -> error."""
    _load_all()
    return dict(_BROKEN)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        UserError: for an unknown name, listing the known ones.
    """
    _load_all()
    if name not in _REGISTRY:
        broken = "".join(f"; {m} failed to import ({err})" for m, err in _BROKEN.items())
        raise UserError(f"unknown model {name!r}: expected one of {', '.join(sorted(_REGISTRY))}{broken}")
    return _REGISTRY[name]


def list_models(kind: Optional[str] = None, family: Optional[str] = None) -> list[str]:
    """Sorted registered names, optionally only those of one ``kind`` (``backbone`` or ``network``) and one
    ``family`` (the networks one training stage trains, e.g. ``single``)."""
    _load_all()
    return sorted(n for n, e in _REGISTRY.items()
                  if (kind is None or e.kind == kind) and (family is None or e.family == family))


def check_family(name: str, family: str, option: str = "--model") -> None:
    """Refuse ``name`` unless it is a registered network of ``family`` (the check click's choice makes on the
    command line, for values from a ``--config`` file or a recipe).

    Raises:
        UserError: naming ``option``, the value and the family's networks.
    """
    models = list_models(kind="network", family=family)
    if name not in models:
        raise UserError(f"{option} {name}: not a network of the {family} family (expected one of "
                        f"{', '.join(models) or 'none registered'})")


def build_model(name: str, **kwargs: Any):
    """Build the registered model ``name`` with keyword arguments.

    Raises:
        UserError: for an unknown name or arguments the builder does not take.
    """
    entry = model_entry(name)
    try:
        inspect.signature(entry.builder).bind(**kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r}: {e}") from None
    return entry.builder(**kwargs)


def build_backbone(name: str, **kwargs: Any):
    """Like :func:`build_model`, but ``name`` must be a backbone."""
    entry = model_entry(name)
    if entry.kind != "backbone":
        raise UserError(f"{name!r} is not a backbone: expected one of {', '.join(list_models('backbone'))}")
    return build_model(name, **kwargs)


def parameter_count(name: str, **kwargs: Any) -> int:
    """Number of parameters of ``build_model(name, **kwargs)``, counted without allocating them (meta device)."""
    import torch

    with torch.device("meta"):
        model = build_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())
