"""Convert a ``.caffemodel`` (the DeepLab ``vgg16_20M.caffemodel``) into one of our backbones, without Caffe or protoc.

Usage: ``python tools/convert_caffemodel.py IN.caffemodel OUT.pth [--layout vgg16] [--overwrite]``

A ``.caffemodel`` is a protobuf ``NetParameter``, read here from the wire format (varint keys
``field << 3 | wire type``; wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32), using these fields of
``caffe.proto``:

* ``NetParameter``: ``layer`` = 100 (``LayerParameter``), legacy ``layers`` = 2 (``V1LayerParameter``);
* ``LayerParameter``: name = 1, type = 2 (string), blobs = 7;
* ``V1LayerParameter``: name = 4, type = 5 (enum), blobs = 6; the older V0 form (its field 1) is refused;
* ``BlobProto``: data = 5 (packed float), double_data = 8 (packed double), shape = 7 (``BlobShape``: dim = 1,
  packed int64), legacy num / channels / height / width = 1..4 (used, as Caffe does, when any is present).

A *layout* (``tools/caffe_layouts.py``, ``--layout``) turns the layers into one registered backbone's keys:

* ``vgg16`` (default; ``psa_affinitynet.md`` §1.4): every Caffe layer ``X`` of ``conv1_1`` ... ``conv5_3``, ``fc6``
  (3x3, 1024) and ``fc7`` (1x1, 1024) gives ``X.weight`` = blobs[0] and ``X.bias`` = blobs[1]; legacy 4-D bias
  blobs (1, 1, 1, C) are reshaped to (C,).
* ``resnet101_caffe`` (``retrain.md`` §1.1, the DeepLab-v2 ResNet-101 inits): ``conv1`` / ``res{S}{B}_branch{X}``
  convs, ``BatchNorm`` statistics divided by their scale factor, ``Scale`` gamma/beta, the ``fc...`` classifier.

Layers without blobs are skipped; any other layer with blobs is reported and nothing is written. The output must
load strictly into the layout's backbone (``--init-weights``), or nothing is written either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import click
import numpy as np

from caffe_layouts import LAYOUTS, CaffeLayer, Layout, collect
from weight_conversion import describe_source, fit_to_backbone, input_convention, listing, user_errors, \
    write_converted
from wsss.errors import UserError

PROG = "convert_caffemodel"
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class LayerFields(NamedTuple):
    """Field numbers of one layer message kind."""

    message: str
    name: int
    type: int
    blobs: int
    v0: Optional[int]


NEW_LAYER = LayerFields("LayerParameter", name=1, type=2, blobs=7, v0=None)
V1_LAYER = LayerFields("V1LayerParameter", name=4, type=5, blobs=6, v0=1)
NET_LAYER_FIELDS = {100: NEW_LAYER, 2: V1_LAYER}
BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
BLOB_SHAPE, BLOB_DATA, BLOB_DOUBLE_DATA = 7, 5, 8


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(unsigned value, next position) of the varint at ``pos``."""
    value = shift = 0
    while shift < 70:
        if pos >= len(buf):
            raise ValueError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError(f"varint longer than 10 bytes before byte {pos}")


def signed(value: int) -> int:
    """A varint read as a two's-complement int64 (how protobuf stores negative int32/int64)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: memoryview, message: str) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field: an int for varints, a memoryview otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError(f"{message}: field number 0 before byte {pos}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
            yield field, wire, value
            continue
        if wire == LENGTH:
            size, pos = read_varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise ValueError(f"{message}: field {field} has wire type {wire}, which caffe.proto never uses")
        if pos + size > len(buf):
            raise ValueError(f"{message}: field {field} needs {size} bytes at byte {pos}, "
                             f"{len(buf) - pos} left (truncated file?)")
        yield field, wire, buf[pos:pos + size]
        pos += size


def fixed_values(value: object, wire: int, dtype: str, message: str) -> np.ndarray:
    """A packed (length-delimited) or single fixed-width repeated value as a 1-D array."""
    itemsize = np.dtype(dtype).itemsize
    if wire not in (LENGTH, FIXED32 if itemsize == 4 else FIXED64) or len(value) % itemsize:
        raise ValueError(f"{message}: malformed {dtype} values (wire type {wire}, {len(value)} bytes)")
    return np.frombuffer(value, dtype=dtype)


def varint_values(value: object, wire: int, message: str) -> list[int]:
    """A packed or single repeated varint field, as signed ints."""
    if wire == VARINT:
        return [signed(value)]
    if wire != LENGTH:
        raise ValueError(f"{message}: malformed varint values (wire type {wire})")
    out, pos = [], 0
    while pos < len(value):
        v, pos = read_varint(value, pos)
        out.append(signed(v))
    return out


def read_blob(buf: memoryview) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its shape (``shape`` field, else the legacy 4-D one, as Caffe)."""
    legacy: dict[int, int] = {}
    shape: Optional[tuple] = None
    floats, doubles = [], []
    for field, wire, value in fields(buf, "BlobProto"):
        if field in BLOB_LEGACY_DIMS and wire == VARINT:
            legacy[field] = signed(value)
        elif field == BLOB_SHAPE and wire == LENGTH:
            shape = tuple(d for f, w, v in fields(value, "BlobShape") if f == 1
                          for d in varint_values(v, w, "BlobShape.dim"))
        elif field == BLOB_DATA:
            floats.append(fixed_values(value, wire, "<f4", "BlobProto.data"))
        elif field == BLOB_DOUBLE_DATA:
            doubles.append(fixed_values(value, wire, "<f8", "BlobProto.double_data"))
    if legacy:
        shape = tuple(legacy.get(f, 0) for f in BLOB_LEGACY_DIMS)
    shape = shape or ()
    parts = floats or doubles
    data = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != data.size:
        raise ValueError(f"BlobProto: {data.size} values for shape {shape}")
    return data.reshape(shape)


def read_layer(buf: memoryview, spec: LayerFields) -> CaffeLayer:
    """One ``LayerParameter`` or ``V1LayerParameter``: name, type and blobs."""
    layer = CaffeLayer(name="", type="", blobs=[])
    for field, wire, value in fields(buf, spec.message):
        if field == spec.name and wire == LENGTH:
            layer.name = bytes(value).decode("utf-8", errors="replace")
        elif field == spec.type:
            layer.type = bytes(value).decode("utf-8", errors="replace") if wire == LENGTH else f"V1:{value}"
        elif field == spec.blobs and wire == LENGTH:
            layer.blobs.append(read_blob(value))
        elif field == spec.v0:
            raise ValueError(f"{spec.message} {layer.name!r}: the V0 layer format (field 1) is not supported")
    return layer


def read_caffemodel(path: Path) -> list[CaffeLayer]:
    """The layers of a ``.caffemodel`` (new ``layer`` and legacy ``layers`` entries, in file order).

    Raises:
        UserError: a missing file, or one that is not a readable ``NetParameter`` (truncated, bad wire data,
            blob sizes that disagree with their shapes, V0 layers), or one without layers.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    buf = memoryview(path.read_bytes())
    try:
        layers = [read_layer(value, NET_LAYER_FIELDS[field]) for field, wire, value in fields(buf, "NetParameter")
                  if field in NET_LAYER_FIELDS and wire == LENGTH]
    except ValueError as e:
        raise UserError(f"{path}: not a readable Caffe model: {e}") from None
    if not layers:
        raise UserError(f"{path}: not a Caffe model: no layers (NetParameter fields 100 or 2)")
    return layers


def convert(src: Path, layout: Layout) -> dict[str, np.ndarray]:
    """Read ``src`` and map its layers with ``layout``: our key -> array.

    Raises:
        UserError: an unreadable file, or layers with blobs the layout does not take (all listed).
    """
    arrays, unmapped = collect(read_caffemodel(src), layout)
    if unmapped:
        raise UserError(f"{src}: {listing(unmapped)} layers with blobs map onto no {layout.backbone} key")
    return arrays


@click.command(PROG)
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--layout", "layout_name", type=click.Choice(sorted(LAYOUTS)), default="vgg16", show_default=True,
              help="Which model the file holds, and so which backbone the output is for.")
@click.option("--overwrite", is_flag=True, help="Replace OUT and its .json sidecar if they exist.")
def main(src: Path, out: Path, layout_name: str, overwrite: bool) -> None:
    """Convert SRC (.caffemodel) into OUT (.pth) and OUT's .json sidecar."""
    layout = LAYOUTS[layout_name]
    with user_errors(PROG):
        arrays = fit_to_backbone(convert(src, layout), layout.backbone, str(src))
        source = describe_source(src, layout.release_md5)
        sidecar = {"backbone": layout.backbone, "layout": layout_name, "converter": f"tools/{PROG}.py", **source,
                   "expected_source": layout.source, "mapping": layout.notes,
                   "input": input_convention(layout.backbone)}
        count = write_converted(out, arrays, sidecar, overwrite)
    click.echo(f"{out}: {len(arrays)} tensors, {count:,} values for {layout.backbone} (layout {layout_name})")


if __name__ == "__main__":
    main()
