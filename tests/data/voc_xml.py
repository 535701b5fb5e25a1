"""A reader of VOC XML annotations, for checking what the toy generator writes (the package reads no XML)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VocObject:
    """One ``<object>`` of a VOC XML annotation; the box is VOC's 1-based (xmin, ymin, xmax, ymax)."""

    name: str
    box: tuple
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC ``Annotations/{id}.xml``: file name, (height, width) and objects."""

    filename: str
    size: tuple
    objects: tuple


def read_voc_xml(path: Path) -> VocAnnotation:
    """Parse a VOC XML annotation (object parts such as head/hand are not objects and are skipped).

    """
    root = ET.parse(path).getroot()
    size = root.find("size")
    hw = (int(size.findtext("height")), int(size.findtext("width"))) if size is not None else (0, 0)
    objects = tuple(_read_object(node) for node in root.findall("object"))
    return VocAnnotation(filename=root.findtext("filename", ""), size=hw, objects=objects)


def _read_object(node: ET.Element) -> VocObject:
    box = node.find("bndbox")
    coords = tuple(int(float(box.findtext(t))) for t in ("xmin", "ymin", "xmax", "ymax")) if box is not None else ()
    return VocObject(name=(node.findtext("name") or "").strip(), box=coords,
                     difficult=node.findtext("difficult", "0").strip() == "1",
                     truncated=node.findtext("truncated", "0").strip() == "1")
