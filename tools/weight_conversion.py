"""What the weight converters in ``tools/`` share: the check against our backbone, the write, the exit on errors.

A converter reads a foreign file into ``{our key: numpy array}`` and hands it to :func:`fit_to_backbone`, which
undoes Caffe's legacy blob padding and then runs the very check ``--init-weights`` runs
(:func:`wsss.models.weights.load_state_dict_strict`) on a backbone built on the meta device, so nothing of the
network's size is allocated. :func:`write_converted` writes a plain state dict (what ``torch.load`` and
:func:`wsss.models.weights.load_backbone_init` read) and a JSON sidecar next to it that records the source file,
its md5 and the input convention the weights expect.

The package never imports this module; the scripts find it next to themselves on ``sys.path``. torch and the model
zoo are imported only when a conversion gets that far, so ``--help`` and a refused file answer at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional

import click
import numpy as np

from wsss.errors import UserError

SHOW = 6  # names shown in one error line


def listing(names: list[str]) -> str:
    """``"3 (a, b, c)"``, at most :data:`SHOW` names."""
    more = ", ..." if len(names) > SHOW else ""
    return f"{len(names)} ({', '.join(names[:SHOW])}{more})"


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 8 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1)


def fit_to_backbone(arrays: dict[str, np.ndarray], backbone: str, source: str) -> dict[str, np.ndarray]:
    """Check converted arrays against a registered backbone exactly as ``--init-weights`` will; return them.

    An array whose shape differs from the network's only by axes of length 1 (a Caffe legacy blob: a bias stored
    as (1, 1, 1, C), an InnerProduct weight (1, 1, out, in) for a 1x1 conv) is reshaped to the network's shape.

    Args:
        arrays: our key -> array (any float dtype).
        backbone: registry name, e.g. ``"wideresnet38"``.
        source: the input file, for messages.

    Raises:
        UserError: one line naming the missing, unexpected and mis-shaped keys.
    """
    import torch

    from wsss.models import build_backbone
    from wsss.models.weights import load_state_dict_strict

    with torch.device("meta"):
        net = build_backbone(backbone)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    fitted = {}
    for key, array in arrays.items():
        want = expected.get(key)
        if want is not None and array.shape != want and _squeezed(array.shape) == _squeezed(want):
            array = array.reshape(want)
        fitted[key] = array
    meta = {k: torch.empty(a.shape, device="meta") for k, a in fitted.items()}
    load_state_dict_strict(net, meta, allow_unexpected=getattr(net, "init_drop", ()), source=source)
    return fitted


def input_convention(backbone: str) -> dict:
    """The input the backbone's weights expect, from :func:`wsss.models.normalization.normalization_for`."""
    from wsss.models.normalization import normalization_for

    norm = dataclasses.asdict(normalization_for(backbone))
    return {"channel_order": "BGR" if norm.pop("bgr") else "RGB", "pixel_scale": norm.pop("scale"),
            "formula": "(pixel[channel_order] / pixel_scale - mean) / std", **norm}


def sidecar_path(out: Path) -> Path:
    """``vgg16_20M.pth`` -> ``vgg16_20M.json``."""
    return Path(out).with_suffix(".json")


def write_converted(out: Path, arrays: dict[str, np.ndarray], sidecar: dict, overwrite: bool = False) -> int:
    """Write ``out`` (a plain float32 state dict) and its JSON sidecar; return the number of values written.

    Both go to temporary names first; the ``.pth`` is renamed into place last, so a present ``out`` is complete.

    Raises:
        UserError: if ``out`` or its sidecar exists and ``overwrite`` is not set, or ``out`` ends in ``.json``.
    """
    out, side = Path(out), sidecar_path(out)
    if out == side:
        raise UserError(f"{out}: the weights file cannot end in .json (that name is its sidecar's)")
    for path in (out, side):
        if path.exists() and not overwrite:
            raise UserError(f"{path}: already exists (use --overwrite to replace it)")
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: torch.from_numpy(np.array(a, dtype=np.float32, order="C", copy=True)) for k, a in arrays.items()}
    count = sum(t.numel() for t in state_dict.values())
    meta = {**sidecar, "weights_file": out.name, "tensors": len(state_dict), "values": count}
    tmp_side, tmp_out = side.with_name(side.name + ".part"), out.with_name(out.name + ".part")
    tmp_side.write_text(json.dumps(meta, indent=2) + "\n")
    torch.save(state_dict, tmp_out)
    os.replace(tmp_side, side)
    os.replace(tmp_out, out)
    return count


def describe_source(src: Path, release_md5: Optional[str]) -> dict:
    """Sidecar entries for the input file: name, md5, and whether it is the known public release."""
    digest = md5sum(src)
    return {"source": Path(src).name, "source_md5": digest,
            "release_md5": release_md5, "is_release": None if release_md5 is None else digest == release_md5}


class ConversionFailed(click.ClickException):
    """A :class:`UserError` on its way out of a converter: one line on stderr, exit code 2."""

    exit_code = 2

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog

    def show(self, file=None) -> None:
        click.echo(f"{self.prog}: error: {self.message}", err=True)


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` raised inside into :class:`ConversionFailed` (first line of the message only)."""
    try:
        yield
    except UserError as e:
        lines = str(e).strip().splitlines() or ["error"]
        raise ConversionFailed(prog, lines[0]) from None
