"""Writers of the two foreign weight formats, written from their format descriptions (not from the readers).

MXNet ``NDArray::Save`` list, little-endian: uint64 0x112, uint64 0, uint64 count; per array a record (see
:func:`ndarray_record`); uint64 name count, then uint64 length + UTF-8 bytes per name.

Caffe ``NetParameter`` protobuf: varint keys ``field << 3 | wire type``; layers in field 100 (``LayerParameter``:
name 1, type 2, bottom 3, top 4, loss_weight 5, blobs 7) or legacy field 2 (``V1LayerParameter``: bottom 2, top 3,
name 4, type 5 enum, blobs 6, blobs_lr 7); ``BlobProto``: num/channels/height/width 1-4, data 5 (packed float),
shape 7 (``BlobShape`` dim 1, packed int64), double_data 8.
"""
from __future__ import annotations

import struct
from typing import Iterable, Sequence

import numpy as np

LIST_MAGIC = 0x112
NDARRAY_MAGIC = {"v1": 0xF993FAC8, "v2": 0xF993FAC9, "v3": 0xF993FACA}
TYPE_FLAGS = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5, "int64": 6}
CPU, GPU = 1, 2


def ndarray_record(array: np.ndarray, version: str = "v2", storage_type: int = 0, device: tuple = (CPU, 0)) -> bytes:
    """One array as ``NDArray::Save`` writes it.

    v2/v3: uint32 magic, int32 storage type, int32 ndim, int64 dims; v1: uint32 magic, int32 ndim, int64 dims;
    legacy: uint32 ndim (no magic), uint32 dims. Then int32 device type, int32 device id, int32 type flag, data.
    """
    a = np.asarray(array)  # tobytes() below is C order; ascontiguousarray would make 0-d arrays 1-d
    if version == "legacy":
        head = struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape)
    else:
        head = struct.pack("<I", NDARRAY_MAGIC[version])
        if version != "v1":
            head += struct.pack("<i", storage_type)
        head += struct.pack(f"<i{a.ndim}q", a.ndim, *a.shape)
    head += struct.pack("<iii", device[0], device[1], TYPE_FLAGS[a.dtype.name])
    return head + a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def write_ndarray_list(path, names: Sequence[str], arrays: Iterable[np.ndarray], **record_kwargs) -> None:
    """Write an ``nd.save``/checkpoint ``.params`` file; ``arrays`` may be a generator (written as it goes)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<QQQ", LIST_MAGIC, 0, len(names)))
        for array in arrays:
            f.write(ndarray_record(array, **record_kwargs))
        f.write(struct.pack("<Q", len(names)))
        for name in names:
            raw = name.encode("utf-8")
            f.write(struct.pack("<Q", len(raw)) + raw)


# ---- protobuf ----------------------------------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Base-128 varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf does."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_field(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def varint_field(field: int, value: int) -> bytes:
    return tag(field, 0) + varint(value)


def blob_proto(array: np.ndarray, legacy: bool = False, packed: bool = True, double: bool = False) -> bytes:
    """A ``BlobProto``: shape in field 7 (or legacy 4-D num/channels/height/width padded with leading 1s)."""
    a = np.asarray(array)
    if legacy:
        dims = (1,) * (4 - a.ndim) + a.shape
        out = b"".join(varint_field(f, d) for f, d in zip((1, 2, 3, 4), dims))
    else:
        out = length_field(7, length_field(1, b"".join(varint(d) for d in a.shape)))
    field, dtype, wire = (8, "<f8", 1) if double else (5, "<f4", 5)
    raw = a.astype(dtype).ravel().tobytes()
    if packed:
        return out + length_field(field, raw)
    size = np.dtype(dtype).itemsize
    return out + b"".join(tag(field, wire) + raw[i:i + size] for i in range(0, len(raw), size))


def layer_proto(name: str, blobs: Sequence[bytes], v1: bool = False, type_: str = "Convolution") -> bytes:
    """A ``LayerParameter`` (or ``V1LayerParameter``) with bottom/top and a fixed-width field to skip."""
    if v1:
        out = length_field(2, b"data") + length_field(3, name.encode()) + length_field(4, name.encode())
        out += varint_field(5, 4)  # V1 LayerType CONVOLUTION
        out += b"".join(length_field(6, b) for b in blobs)
        return out + tag(7, 5) + struct.pack("<f", 1.0)  # blobs_lr, unpacked repeated float
    out = length_field(1, name.encode()) + length_field(2, type_.encode())
    out += length_field(3, b"data") + length_field(4, name.encode()) + tag(5, 5) + struct.pack("<f", 0.0)
    return out + b"".join(length_field(7, b) for b in blobs)


def net_proto(layers: Sequence[bytes], v1: bool = False) -> bytes:
    """A ``NetParameter``: name, force_backward (a varint to skip), then the layers."""
    out = length_field(1, b"VGG_ILSVRC_16_layers") + varint_field(5, 0)
    return out + b"".join(length_field(2 if v1 else 100, layer) for layer in layers)
