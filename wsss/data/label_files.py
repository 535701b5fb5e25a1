"""A user's class list and image-level labels, as ``wsss data prepare folder`` takes them.

Classes file (``--classes``): one foreground class name per line, in label order 1..C (the value of the class in
a mask). A first line ``background`` (any case) names label 0 and is dropped. Blank lines are skipped; names are
unique; at most 254 classes (0 is background, 255 ignore).

Labels file (``--labels``), keyed by image: its id (the file name without extension), its file name, or its path
under ``--images``. Every image needs an entry; an empty one means no foreground class.

* ``.json``: ``{"img_001": ["cat", "dog"], "img_002": []}``.
* ``.csv`` with a header row, either
  - two columns (``image,labels``): the image's class names in the second, separated by ``|``, ``;`` or
    whitespace (a cell that is exactly one class name, such as ``traffic light``, is that class), or
  - one column per class after the first (``image,cat,dog,fox``), each 0 or 1.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from wsss.errors import UserError

MAX_CLASSES = 254


def read_classes(path: Path) -> tuple:
    """The foreground class names of a classes file, in label order.

    Raises:
        UserError: missing file, no class, a repeated name, or more than 254 classes.
    """
    path = Path(path)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--classes {path}: cannot read the class list ({e})") from None
    if names and names[0].lower() == "background":
        names = names[1:]
    if not names:
        raise UserError(f"--classes {path}: no class names (expected one foreground class per line)")
    repeated = [n for k, n in enumerate(names) if n in names[:k]]
    if repeated:
        raise UserError(f"--classes {path}: class '{repeated[0]}' is listed twice")
    if len(names) > MAX_CLASSES:
        raise UserError(f"--classes {path}: {len(names)} classes; at most {MAX_CLASSES} fit in a label PNG")
    return tuple(names)


def read_labels(path: Path, classes: Sequence[str]) -> dict[str, list[int]]:
    """Image key -> sorted 0-based class indices, from a ``.json`` or ``.csv`` labels file.

    Raises:
        UserError: unreadable file, unknown format, an unknown class name, a key given twice, a bad 0/1 value.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise UserError(f"--labels {path}: expected a .json or .csv file of image-level labels")
    try:
        text = path.read_text(encoding="utf-8-sig")
        rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text, classes)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise UserError(f"--labels {path}: cannot read it ({type(e).__name__}: {e})") from None
    index = {name: k for k, name in enumerate(classes)}
    labels: dict[str, list[int]] = {}
    for where, key, names in rows:
        if not key:
            raise UserError(f"--labels {path}: {where} has no image name")
        if key in labels:
            raise UserError(f"--labels {path}: image '{key}' is labelled twice ({where})")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise UserError(f"--labels {path}: {where}: unknown class name '{unknown[0]}' (classes: "
                            f"{', '.join(classes)})")
        labels[key] = sorted({index[n] for n in names})
    if not labels:
        raise UserError(f"--labels {path}: no image labels in it")
    return labels


def _json_rows(path: Path, text: str) -> list[tuple]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise UserError(f"--labels {path}: expected a JSON object {{image: [class names]}}")
    rows = []
    for key, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"--labels {path}: image '{key}': expected a list of class names, got {names!r}")
        rows.append((f"image '{key}'", key.strip(), names))
    return rows


def _csv_rows(path: Path, text: str, classes: Sequence[str]) -> list[tuple]:
    table = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if len(table) < 2 or len(table[0]) < 2:
        raise UserError(f"--labels {path}: expected a header row and one row per image, with at least two "
                        f"columns (image,labels or image,<class>,<class>...)")
    header = [cell.strip() for cell in table[0]]
    unknown = [name for name in header[1:] if name not in classes] if len(header) > 2 else []
    if unknown:
        raise UserError(f"--labels {path}: header column '{unknown[0]}' is not a class name (classes: "
                        f"{', '.join(classes)})")
    rows = []
    for n, row in enumerate(table[1:], start=2):
        where = f"row {n}"
        if len(row) != len(header):
            raise UserError(f"--labels {path}: {where} has {len(row)} columns, the header {len(header)}")
        if len(header) == 2:
            names = _names_in_cell(row[1], classes)
        else:
            names = [name for name, cell in zip(header[1:], row[1:]) if _flag(cell, path, where, name)]
        rows.append((where, row[0].strip(), names))
    return rows


def _names_in_cell(cell: str, classes: Sequence[str]) -> list[str]:
    cell = cell.strip()
    if not cell:
        return []
    if cell in classes:
        return [cell]
    sep = "|" if "|" in cell else ";" if ";" in cell else None
    return [name.strip() for name in cell.split(sep) if name.strip()]


def _flag(cell: str, path: Path, where: str, name: str) -> bool:
    value = cell.strip()
    if value in ("0", "1", "0.0", "1.0"):
        return value.startswith("1")
    raise UserError(f"--labels {path}: {where}, column '{name}': expected 0 or 1, got {cell!r}")
