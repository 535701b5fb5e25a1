"""``manifest.json`` read/write/validate and atomic, resumable output folders.

Every stage writes into one output folder. While it works, the folder holds ``manifest.partial.json`` (the
identity of the run: kind, stage, config, inputs); each item is written under a temporary name and renamed into
place, so a killed run leaves only whole items. When all items are there, ``manifest.json`` is written (again
through a rename) and the partial marker removed. Readers trust only ``manifest.json``.

Example:
    >>> out = OutputDir.open("cams", kind="cam", stage="cam_infer", config={"scales": [1.0]}, inputs={})
    >>> if out.state != "done":
    ...     for image_id in ids:
    ...         if not out.has_item(image_id, ".npz"):
    ...             out.write_item(image_id, ".npz", lambda path: np.savez(path, cams=...))
    ...     out.complete(num_items=len(ids), split="train")
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from wsss import __version__
from wsss.errors import UserError

MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"

# The files that make up one item of each artifact kind; ``num_items`` counts them (formats: items.py).
ITEM_SUFFIX = {"cam": ".npz", "label": ".png", "checkpoint": ".pt"}


@dataclasses.dataclass
class Manifest:
    """The content of ``manifest.json``. ``extra`` holds stage-specific facts (e.g. the classes of a dataset)."""

    kind: str
    stage: str
    config: dict
    inputs: dict = dataclasses.field(default_factory=dict)
    split: Optional[str] = None
    num_items: int = 0
    wsss_version: str = __version__
    created_at: str = ""
    extra: dict = dataclasses.field(default_factory=dict)
    path: Optional[Path] = dataclasses.field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("path")
        return d

    @classmethod
    def from_json(cls, d: dict, path: Optional[Path] = None) -> "Manifest":
        names = {f.name for f in dataclasses.fields(cls)} - {"path"}
        return cls(**{k: v for k, v in d.items() if k in names}, path=path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def manifest_digest(folder: Path) -> Optional[str]:
    """SHA-256 (first 16 hex digits) of a folder's ``manifest.json``, or None when it has none."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def input_record(path: Path) -> dict:
    """How a stage records one of its inputs: absolute path plus the digest of that artifact's manifest."""
    path = Path(path).resolve()
    folder = path if path.is_dir() else path.parent
    return {"path": str(path), "manifest_sha256": manifest_digest(folder)}


def _identity(kind: str, stage: str, config: dict, inputs: dict) -> str:
    blob = json.dumps({"kind": kind, "stage": stage, "config": config, "inputs": inputs},
                      sort_keys=True, default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(folder: Path, kind: Optional[str] = None, check_items: bool = True) -> Manifest:
    """Read and validate the manifest of a complete artifact.

    Raises:
        UserError: the folder is missing, incomplete, of another kind, or its item count does not match.
    """
    folder = Path(folder)
    what = f"a '{kind}' artifact" if kind else "a wsss artifact"
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (expected {what})")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        if (folder / PARTIAL).is_file():
            raise UserError(f"{folder}: incomplete artifact (the run writing it did not finish; rerun it to resume)")
        raise UserError(f"{folder}: no {MANIFEST} (expected {what} written by wsss)")
    try:
        m = Manifest.from_json(json.loads(mpath.read_text()), path=folder)
    except (ValueError, TypeError) as e:
        raise UserError(f"{mpath}: not a valid wsss manifest ({e})") from None
    if kind is not None and m.kind != kind:
        raise UserError(f"{folder}: is a '{m.kind}' artifact from stage '{m.stage}', expected a '{kind}' artifact")
    suffix = ITEM_SUFFIX.get(m.kind)
    if check_items and suffix is not None:
        found = sum(1 for p in folder.iterdir() if p.suffix == suffix and not p.name.startswith("."))
        if found != m.num_items:
            raise UserError(f"{folder}: manifest says {m.num_items} {suffix} items but {found} are present")
    return m


class OutputDir:
    """An output folder opened for one stage run; see the module docstring.

    ``state`` is ``"fresh"`` (nothing there), ``"resume"`` (a partial run of the same identity) or ``"done"``
    (a complete artifact of the same identity: nothing to do). Anything else raises :class:`UserError` unless
    ``overwrite`` is set, in which case the folder is emptied.
    """

    def __init__(self, folder: Path, kind: str, stage: str, config: dict, inputs: dict, state: str):
        self.folder, self.kind, self.stage = Path(folder), kind, stage
        self.config, self.inputs, self.state = config, inputs, state

    @classmethod
    def open(cls, folder: Path, *, kind: str, stage: str, config: dict, inputs: Optional[dict] = None,
             overwrite: bool = False, create: bool = True) -> "OutputDir":
        folder = Path(folder)
        inputs = inputs or {}
        ident = _identity(kind, stage, config, inputs)
        state = cls._decide(folder, ident, kind, stage, overwrite)
        out = cls(folder, kind, stage, config, inputs, state)
        if state == "fresh" and create:
            out._start()
        return out

    @staticmethod
    def _decide(folder: Path, ident: str, kind: str, stage: str, overwrite: bool) -> str:
        if folder.exists() and not folder.is_dir():
            if not overwrite:
                raise UserError(f"--out {folder}: is a regular file, not a folder (use --overwrite to replace it)")
            folder.unlink()
            return "fresh"
        if not folder.is_dir() or not any(folder.iterdir()):
            return "fresh"
        for name, state in ((MANIFEST, "done"), (PARTIAL, "resume")):
            p = folder / name
            if p.is_file():
                try:
                    d = json.loads(p.read_text())
                    same = _identity(d["kind"], d["stage"], d["config"], d.get("inputs", {})) == ident
                except (ValueError, KeyError, TypeError):
                    d, same = {}, False
                if same:
                    return state
                what = (f"a {'complete' if state == 'done' else 'partial'} '{d.get('kind', '?')}' artifact "
                        f"from stage '{d.get('stage', '?')}' with another config or inputs")
                break
        else:
            what = "files that are not a wsss artifact"
        if not overwrite:
            raise UserError(f"--out {folder}: holds {what}; refusing to touch it (use --overwrite to replace it)")
        shutil.rmtree(folder)
        return "fresh"

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / PARTIAL, {"kind": self.kind, "stage": self.stage, "config": self.config,
                                                  "inputs": self.inputs, "wsss_version": __version__})

    def item_path(self, item_id: str, suffix: str) -> Path:
        return self.folder / f"{item_id}{suffix}"

    def has_item(self, item_id: str, suffix: str) -> bool:
        return self.item_path(item_id, suffix).is_file()

    def write_item(self, item_id: str, suffix: str, write: Callable[[Path], None]) -> Path:
        """Call ``write(tmp_path)`` then rename the result to ``{item_id}{suffix}``."""
        final = self.item_path(item_id, suffix)
        tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}{suffix}")
        try:
            write(tmp)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def complete(self, num_items: int, split: Optional[str] = None, extra: Optional[dict] = None) -> Manifest:
        """Write ``manifest.json`` (validated against the items present) and drop the partial marker."""
        m = Manifest(kind=self.kind, stage=self.stage, config=self.config, inputs=self.inputs, split=split,
                     num_items=num_items, extra=extra or {},
                     created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     path=self.folder)
        suffix = ITEM_SUFFIX.get(self.kind)
        if suffix is not None:
            found = sum(1 for p in self.folder.iterdir() if p.suffix == suffix and not p.name.startswith("."))
            if found != num_items:
                raise RuntimeError(f"{self.folder}: {found} {suffix} items present, {num_items} expected")
        write_json_atomic(self.folder / MANIFEST, m.to_json())
        partial = self.folder / PARTIAL
        if partial.exists():
            partial.unlink()
        return m
