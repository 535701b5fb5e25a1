"""``wsss cam import``: the reference code's ``.npy`` dicts turned into our artifacts, explicitly.

PSA/SEAM save CAMs as ``np.save`` of a Python dict ``{0-based class: (H, W) float32}`` and CRF results as
``{0: background, c + 1: class c}``. Such files are pickles; we never call ``np.load(allow_pickle=True)``.
:func:`load_reference_dict` reads them with an unpickler that admits only NumPy's array and scalar
reconstruction, so a file carrying anything else is refused instead of executed.

- ``--format cam`` (PSA/SEAM ``out_cam``) -> a ``cam`` artifact (rows = the dict's classes, in class order), values
  clipped to the artifact's [0, 1] (SEAM's normalisation leaves a few pixels per class slightly negative);
- ``--format crf`` (PSA ``out_la_crf`` / ``out_ha_crf``, SEAM ``out_crf``'s ``PREFIX_4.0`` / ``PREFIX_24.0``;
  0 = background) -> a ``label`` artifact (argmax);
- ``--format irn`` (IRN ``result/cam``: ``keys`` (K,) 0-based classes, ``cam`` (K, ceil(H/4), ceil(W/4)) and
  ``high_res`` (K, H, W), irn.md §2.4) -> a ``cam`` artifact: ``high_res`` as the CAMs, ``cam`` as the item's
  ``cams_stride4``. IRN stored torch tensors: their storages are read with ``torch.load(weights_only=True)`` and
  turned into arrays; nothing else of torch is admitted.
"""
from __future__ import annotations

import collections
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




def _load_storage(data: bytes):
    """``torch.storage._load_from_bytes`` (a pickled tensor's storage), read with ``weights_only``."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _tensor_array(storage, offset: int, size, stride, *_) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` as a NumPy array (a view of ``storage`` copied out)."""
    import torch

    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"a tensor needs a storage, got {type(storage).__name__}")
    return torch.empty(0, dtype=storage.dtype).set_(storage, offset, tuple(size), tuple(stride)).numpy().copy()


# Torch tensors in IRN's dicts: their reconstructors replaced by the safe readers above.
_TORCH = {("torch._utils", "_rebuild_tensor_v2"): _tensor_array, ("torch.storage", "_load_from_bytes"): _load_storage,
          ("collections", "OrderedDict"): collections.OrderedDict}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _TORCH:
            return _TORCH[module, name]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def load_reference_dict(path: Path) -> dict[int, np.ndarray]:
    """Read a reference ``.npy`` dict of arrays without general unpickling: ``{int key: float32 (H, W)}``."""
    value = _unpickle_dict(path)
    if not all(isinstance(v, np.ndarray) and v.ndim == 2 for v in value.values()):
        raise UserError(f"{path}: expected a dict of (H, W) arrays")
    try:
        return {int(k): v.astype(np.float32) for k, v in value.items()}
    except (TypeError, ValueError):
        raise UserError(f"{path}: expected integer keys, got {sorted(map(str, value))}") from None


def load_irn_dict(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IRN's CAM dict: ``(keys int64 (K,), cam float32 (K, h, w), high_res float32 (K, H, W))``, shapes checked."""
    value = _unpickle_dict(path)
    if sorted(value) != ["cam", "high_res", "keys"] or not all(isinstance(v, np.ndarray) for v in value.values()):
        raise UserError(f"{path}: expected IRN's dict of arrays 'keys', 'cam', 'high_res', got keys "
                        f"{sorted(map(str, value))}")
    keys, cam, high_res = value["keys"], value["cam"], value["high_res"]
    if (keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer) or cam.ndim != 3 or high_res.ndim != 3
            or not len(keys) == len(cam) == len(high_res)):
        raise UserError(f"{path}: expected integer 'keys' (K,), 'cam' (K, h, w) and 'high_res' (K, H, W), got "
                        f"shapes {keys.shape}, {cam.shape}, {high_res.shape}")
    return keys.astype(np.int64), cam.astype(np.float32), high_res.astype(np.float32)


def _unpickle_dict(path: Path) -> dict:
    """The dict of a reference ``.npy`` file (``np.save`` of a dict), through the restricted unpickler."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype != object or shape != ():
                raise UserError(f"{path}: a {dtype} array of shape {shape}, expected a pickled dict (np.save of a dict)")
            obj = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, TypeError, RuntimeError) as e:
        raise UserError(f"{path}: not a reference .npy dict of arrays ({e})") from None
    value = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a pickled dict, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class CamImportConfig(InferStageConfig):
    split: Optional[str] = option(None, "Split whose ids the .npy files must cover.", required=True)
    npy: Optional[Path] = option(None, "Folder of the reference code's {id}.npy dicts.", required=True)
    format: str = option("cam", "cam: PSA/SEAM out_cam (0-based class keys) -> cam artifact; crf: "
                                "out_la_crf/out_ha_crf (0 = background) -> label artifact; irn: IRN's result/cam "
                                "(keys, cam, high_res) -> cam artifact with the stride-4 CAM.",
                         type="choice:cam|crf|irn", required=True)

    def __post_init__(self):
        if self.format not in ("cam", "crf", "irn"):
            raise UserError(f"--format must be cam, crf or irn, got {self.format!r}")


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
        return np.clip(stack, 0, 1), np.asarray(keys, np.int64)
    return np.asarray(keys, np.uint8)[stack.argmax(axis=0)]


def _convert_irn(path: Path, data, image_id: str, keys, cam, high_res) -> tuple:
    h, w = data.read_image(image_id).shape[:2]
    if high_res.shape[1:] != (h, w) or cam.shape[1:] != (-(-h // 4), -(-w // 4)):
        raise UserError(f"{path}: 'high_res' {high_res.shape[1:]} and 'cam' {cam.shape[1:]} do not fit the "
                        f"{w}x{h} image (expected {(h, w)} and its stride-4 grid {(-(-h // 4), -(-w // 4))})")
    if len(keys) and (keys.min() < 0 or keys.max() >= data.num_classes or len(set(keys.tolist())) < len(keys)):
        raise UserError(f"{path}: keys {keys.tolist()} are not distinct 0-based classes of {data.num_classes}")
    return high_res, keys, {"cams_stride4": cam}


class CamImport(InferenceStage):
    """The reference's ``.npy`` dicts of a split -> a ``cam`` artifact (``--format cam``) or ``label`` (``crf``)."""

    name, config = "cam_import", CamImportConfig
    required = ("data", "split", "npy", "out")

    def run(self, cfg: CamImportConfig) -> Manifest:
        """The artifact kind and stage name follow ``--format``."""
        stage = copy.copy(self)
        stage.kind, stage.name = ("label" if cfg.format == "crf" else "cam"), f"import_{cfg.format}"
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
        cfg, path = ctx.cfg, Path(ctx.cfg.npy) / f"{image_id}.npy"
        if cfg.format == "irn":
            return _convert_irn(path, ctx.data, image_id, *load_irn_dict(path))
        return _convert(cfg, ctx.data, image_id, load_reference_dict(path))

    def manifest_extra(self, ctx: Context) -> dict:
        return {"source": str(Path(ctx.cfg.npy).resolve())}

    def summary(self, manifest: Manifest) -> str:
        return f"cam import: {manifest.num_items} items ({manifest.kind}) in {manifest.path}"


STAGE = CamImport()
run = STAGE.run
