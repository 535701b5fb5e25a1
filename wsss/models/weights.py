"""Strict weight loading: our checkpoints, the original authors' releases and ImageNet initialisations.

Every expected tensor must be present with the right shape, or one :class:`~wsss.errors.UserError` lists what is
missing, unexpected or mis-shaped (the first few names and the counts). Nothing is ever loaded partially. Keys
that are meant to be dropped (an ImageNet classifier) are named explicitly and logged. The one tolerated gap is
BatchNorm's ``num_batches_tracked`` counter, which converted files lack and which carries no learned value.

Files are read with ``torch.load(weights_only=True, map_location="cpu")``: no pickles, and CUDA-saved tensors load
on machines without a GPU.
"""
from __future__ import annotations

import fnmatch
import inspect
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch import nn

from wsss.errors import UserError
from wsss.models.registry import build_model, list_models, model_entry
from wsss.process import LOG

SHOW = 4  # key names shown per problem kind
OPTIONAL_KEYS = ("*.num_batches_tracked",)
CHECKPOINT_KEYS = ("model", "model_kwargs", "state_dict")


def read_weights_file(path: Path) -> Any:
    """``torch.load`` a weights file safely on the CPU.

    Raises:
        UserError: if the file is missing, an mxnet/Caffe original, or not readable as tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if path.suffix in (".params", ".caffemodel"):
        raise UserError(f"{path}: {path.suffix} files need converting to a PyTorch state_dict first "
                        f"(expected a .pth file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {first})") from None


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > SHOW else ''})"


def strip_module_prefix(state_dict: dict, source: str) -> dict:
    """Remove DataParallel's ``module.`` prefix when every key has it (logged)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        LOG.info("%s: removed the 'module.' prefix of all %d keys", source, len(state_dict))
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def load_state_dict_strict(module: nn.Module, state_dict: dict, allow_missing: Iterable[str] = (),
                           allow_unexpected: Iterable[str] = (), source: str = "state_dict") -> None:
    """Load ``state_dict`` into ``module``, all or nothing.

    Args:
        module: the network.
        state_dict: name -> tensor.
        allow_missing: glob patterns of module keys that may be absent (they keep their current values; logged).
        allow_unexpected: glob patterns of file keys that are dropped on purpose (logged).
        source: what to call the weights in messages (usually the file path).

    Raises:
        UserError: one line naming the missing, unexpected and mis-shaped keys, with counts.
    """
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise UserError(f"{source}: expected a state_dict (name -> tensor)")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    tolerated = [k for k in missing if _matches(k, tuple(allow_missing) + OPTIONAL_KEYS)]
    missing = [k for k in missing if k not in tolerated]
    extra = [k for k in state_dict if k not in expected]
    dropped = [k for k in extra if _matches(k, allow_unexpected)]
    unexpected = [k for k in extra if k not in dropped]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or misshaped:
        problems = [f"{what} {_listing(keys)}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs network)", misshaped))
                    if keys]
        raise UserError(f"{source}: does not fit {type(module).__name__} (strict loading): " + "; ".join(problems))
    if dropped:
        LOG.info("%s: dropped %s keys the network does not use", source, _listing(dropped))
    named = [k for k in tolerated if not _matches(k, OPTIONAL_KEYS)]
    if named:
        LOG.info("%s: %s keys absent from the file keep their initial values", source, _listing(named))
    full = {k: state_dict[k] if k in state_dict else expected[k] for k in expected}
    try:
        module.load_state_dict(full, strict=True)
    except ValueError as e:  # a module's own check of what it loads (e.g. PAMR's fixed kernels)
        raise UserError(f"{source}: {e}") from None


def _checkpoint_backbone(ckpt: dict, backbone: nn.Module, source: str) -> dict:
    """The ``backbone.*`` tensors of one of our checkpoints, checked to be of the same backbone."""
    name = getattr(backbone, "name", None)
    theirs = (ckpt.get("model_kwargs") or {}).get("backbone")
    if theirs != name:
        raise UserError(f"{source}: a checkpoint of model {ckpt.get('model')!r} on backbone {theirs!r}, "
                        f"expected one on backbone {name!r}")
    prefix = "backbone."
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def load_backbone_init(backbone: nn.Module, path: Any) -> None:
    """Load an ImageNet initialisation into a backbone, strictly; its classifier keys are dropped explicitly.

    Args:
        backbone: a registered backbone (its ``init_drop`` names the keys meant to be dropped).
        path: the file (``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth``, ``vgg16_20M.pth``, ``resnet50-19c8e357.pth``,
            ...), or ``"torchvision"`` for torchvision's weight enum of a ResNet (downloads when online), or one of
            our checkpoints of a network on the same backbone (its ``backbone.*`` tensors, e.g. a classifier
            pretrained on the toy data, where no ImageNet file exists).
    """
    source = str(path)
    if source == "torchvision":
        if not hasattr(backbone, "torchvision_weights"):
            raise UserError(f"--init-weights torchvision: only the ResNets have torchvision weights, "
                            f"not {getattr(backbone, 'name', type(backbone).__name__)}")
        try:
            state_dict = backbone.torchvision_weights().get_state_dict(progress=False)
        except Exception as e:  # noqa: BLE001 - offline or blocked: the user's environment
            raise UserError(f"--init-weights torchvision: could not fetch the weights ({type(e).__name__}); "
                            f"pass the .pth file instead") from None
    else:
        state_dict = read_weights_file(Path(path))
        if isinstance(state_dict, dict) and all(k in state_dict for k in CHECKPOINT_KEYS):
            state_dict = _checkpoint_backbone(state_dict, backbone, source)
        else:
            state_dict = strip_module_prefix(state_dict, source) if isinstance(state_dict, dict) else state_dict
    load_state_dict_strict(backbone, state_dict, allow_unexpected=getattr(backbone, "init_drop", ()),
                           source=source)
    LOG.info("%s: loaded the initialisation of %s", source, getattr(backbone, "name", "backbone"))


def load_network(path: Any, model: Optional[str] = None, default_model: Optional[str] = None,
                 family: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """Rebuild a network from a weights file and load it strictly; returned in eval mode on the CPU.

    Two formats are recognised:

    * our checkpoint ``{"model", "model_kwargs", "state_dict", ...}``: rebuilt from its registry name and
      arguments. ``model`` and ``kwargs``, when given, must agree with the checkpoint.
    * a flat state_dict, as the original authors released (``res38_cls.pth``, ``res38_aff.pth``, ...): ``model``
      is required. The network is built with the arguments the file implies (the builder's
      ``original_model_kwargs(sd)``, e.g. the backbone read from the key names and the class count from ``fc8``)
      updated by ``kwargs``, which must agree with them; then the keys are mapped by its
      ``import_original_state_dict`` (e.g. backbone keys move under ``backbone.``).

    A stage that accepts several networks gives ``family`` (the registry family the network must belong to) and
    ``default_model`` (the network a flat state_dict is taken for when ``model`` is None). Keyword arguments whose
    value is None count as not given.

    Raises:
        UserError: unreadable file, wrong model, conflicting arguments, or any key/shape mismatch.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    obj = read_weights_file(Path(path))
    if isinstance(obj, dict) and all(k in obj for k in CHECKPOINT_KEYS):
        _check_family(obj["model"], family, path)
        net, state_dict = _from_checkpoint(obj, path, model, kwargs)
    elif isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        model = model or default_model
        if model is None:
            raise UserError(f"{path}: a plain state_dict (the original authors' format); say which network "
                            f"it is for (e.g. --model cam)")
        _check_family(model, family, path)
        net, state_dict = _from_original(strip_module_prefix(obj, str(path)), path, model, kwargs)
    else:
        raise UserError(f"{path}: not a weights file we know (expected a wsss checkpoint with keys "
                        f"{', '.join(CHECKPOINT_KEYS)}, or a flat name -> tensor state_dict)")
    load_state_dict_strict(net, state_dict, source=str(path))
    return net.eval()


def _check_family(name: str, family: Optional[str], path: Any) -> None:
    if family is not None and model_entry(name).family != family:
        raise UserError(f"{path}: a network {name!r}, expected one of the {family} family "
                        f"({', '.join(list_models(kind='network', family=family))})")


def _from_checkpoint(ckpt: dict, path: Any, model: Optional[str], kwargs: dict) -> tuple[nn.Module, dict]:
    """Build the network a checkpoint names, checking ``model`` and ``kwargs`` against it."""
    name = ckpt["model"]
    if model is not None and name != model:
        raise UserError(f"{path}: checkpoint for model {name}, expected {model}")
    stored = dict(ckpt.get("model_kwargs") or {})
    builder = model_entry(name).builder
    defaults = {p.name: p.default for p in inspect.signature(builder).parameters.values()
                if p.default is not inspect.Parameter.empty}
    effective = {**defaults, **stored}
    for key, value in kwargs.items():
        if key in effective and effective[key] != value:
            raise UserError(f"{path}: checkpoint has {key}={effective[key]!r}, expected {value!r}")
    net = build_model(name, **{**stored, **kwargs})
    return net, ckpt["state_dict"]


def _from_original(state_dict: dict, path: Any, model: str, kwargs: dict) -> tuple[nn.Module, dict]:
    """Build ``model`` for a flat original state dict and map its keys to ours."""
    builder = model_entry(model).builder
    hook = getattr(builder, "original_model_kwargs", None)
    implied = dict(hook(state_dict)) if hook is not None else {}
    for key, value in kwargs.items():
        if key in implied and implied[key] != value:
            raise UserError(f"{path}: the file holds a {model} network with {key}={implied[key]!r}, "
                            f"expected {value!r}")
    net = build_model(model, **{**implied, **kwargs})
    if hasattr(net, "import_original_state_dict"):
        state_dict = net.import_original_state_dict(state_dict)
    return net, state_dict
