"""``wsss cam import``: the reference code's ``.npy`` dicts turned into our artifacts, explicitly.

PSA/SEAM save CAMs as ``np.save`` of a Python dict ``{0-based class: (H, W) float32}`` and CRF results as
``{0: background, c + 1: class c}``. Such files are pickles; we never call ``np.load(allow_pickle=True)``.
:func:`load_reference_dict` reads them with an unpickler that admits only NumPy's array and scalar
reconstruction, so a file carrying anything else is refused instead of executed.

- ``--format cam`` (PSA/SEAM ``out_cam``) -> a ``cam`` artifact (rows = the dict's classes, in class order);
- ``--format crf`` (PSA ``out_la_crf`` / ``out_ha_crf``, 0 = background) -> a ``label`` artifact (argmax).
"""
from __future__ import annotations

import copy
import dataclasses
import io
import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from wsss.artifacts import Manifest
from wsss.config import option
from wsss.engine.inference import Context, InferenceStage, InferStageConfig
from wsss.errors import UserError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def load_reference_dict(path: Path) -> dict[int, np.ndarray]:
    """Read a reference ``.npy`` dict of arrays without general unpickling: ``{int key: float32 (H, W)}``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype != object or shape != ():
                raise UserError(f"{path}: a {dtype} array of shape {shape}, expected a pickled dict (np.save of a dict)")
            obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, TypeError) as e:
        raise UserError(f"{path}: not a reference .npy dict of arrays ({e})") from None
    value = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(value, dict) or not all(isinstance(v, np.ndarray) and v.ndim == 2 for v in value.values()):
        raise UserError(f"{path}: expected a dict of (H, W) arrays")
    return {int(k): v.astype(np.float32) for k, v in value.items()}


@dataclasses.dataclass(frozen=True)
class CamImportConfig(InferStageConfig):
    split: Optional[str] = option(None, "Split whose ids the .npy files must cover.", required=True)
    npy: Optional[Path] = option(None, "Folder of the reference code's {id}.npy dicts.", required=True)
    format: str = option("cam", "cam: PSA/SEAM out_cam (0-based class keys) -> cam artifact; crf: "
                                "out_la_crf/out_ha_crf (0 = background) -> label artifact.", type="choice:cam|crf",
                         required=True)

    def __post_init__(self):
        if self.format not in ("cam", "crf"):
            raise UserError(f"--format must be cam or crf, got {self.format!r}")


def _convert(cfg: CamImportConfig, data, image_id: str, entries: dict):
    h, w = data.read_image(image_id).shape[:2]
    for k, v in entries.items():
        if v.shape != (h, w):
            raise UserError(f"{cfg.npy}/{image_id}.npy: map {k} is {v.shape[1]}x{v.shape[0]}, image is {w}x{h}")
    keys = sorted(entries)
    top = data.num_classes if cfg.format == "cam" else data.num_classes + 1
    if any(not 0 <= k < top for k in keys) or (cfg.format == "crf" and 0 not in keys):
        raise UserError(f"{cfg.npy}/{image_id}.npy: keys {keys} do not fit --format {cfg.format} "
                        f"({'0-based classes' if cfg.format == 'cam' else '0 = background, then class + 1'})")
    stack = np.stack([entries[k] for k in keys]) if keys else np.zeros((0, h, w), np.float32)
    if cfg.format == "cam":
        return stack, np.asarray(keys, np.int64)
    return np.asarray(keys, np.uint8)[stack.argmax(axis=0)]


class CamImport(InferenceStage):
    """The reference's ``.npy`` dicts of a split -> a ``cam`` artifact (``--format cam``) or ``label`` (``crf``)."""

    name, config = "cam_import", CamImportConfig
    required = ("data", "split", "npy", "out")

    def run(self, cfg: CamImportConfig) -> Manifest:
        """The artifact kind and stage name follow ``--format``."""
        stage = copy.copy(self)
        stage.kind, stage.name = ("cam" if cfg.format == "cam" else "label"), f"import_{cfg.format}"
        return super(CamImport, stage).run(cfg)

    def check_inputs(self, cfg, data, ids: list) -> None:
        folder = Path(cfg.npy)
        if not folder.is_dir():
            raise UserError(f"--npy {folder}: no such folder")
        present = {p.stem for p in folder.glob("*.npy")}
        missing, extra = [i for i in ids if i not in present], sorted(present - set(ids))
        if missing or extra:
            raise UserError(f"--npy {folder}: {len(missing)} ids of '{cfg.split}' have no .npy (first: "
                            f"{missing[:3]}), {len(extra)} files are not in the split (first: {extra[:3]})")

    def predict(self, ctx: Context, image_id: str):
        cfg = ctx.cfg
        return _convert(cfg, ctx.data, image_id, load_reference_dict(Path(cfg.npy) / f"{image_id}.npy"))

    def manifest_extra(self, ctx: Context) -> dict:
        return {"source": str(Path(ctx.cfg.npy).resolve())}

    def summary(self, manifest: Manifest) -> str:
        return f"cam import: {manifest.num_items} items ({manifest.kind}) in {manifest.path}"


STAGE = CamImport()
run = STAGE.run
