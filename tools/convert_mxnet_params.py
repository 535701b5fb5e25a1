"""Convert ademxapp's MXNet ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` into our ``wideresnet38`` keys, without mxnet.

Usage: ``python tools/convert_mxnet_params.py IN.params OUT.pth [--overwrite]``

The file is MXNet's NDArray list (``NDArray::Save`` of a list with names), little-endian:

* header: uint64 list magic ``0x112``, uint64 reserved, uint64 array count;
* per array: uint32 magic, then
  - V2 ``0xF993FAC9`` / V3 ``0xF993FACA`` (NumPy shape semantics): int32 storage type (only 0 = dense is
    read; 1 row_sparse and 2 csr are refused), shape = int32 ndim + ndim int64 dims;
  - V1 ``0xF993FAC8``: shape = int32 ndim + ndim int64 dims;
  - legacy (before V1, e.g. 2016 files): the magic *is* ndim, followed by ndim uint32 dims;
  then context (int32 device type: 1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared; int32 device id), int32 type flag
  (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64, 7 bool) and the raw C-order data;
* uint64 name count, then per name a uint64 byte length and the UTF-8 bytes (``arg:...`` parameters,
  ``aux:...`` BatchNorm statistics).

Names map onto the layout of the converted ``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth`` that PSA and 1-stage-wseg use
(``psa_affinitynet.md`` §1.1): ``conv1a_weight`` -> ``conv1a.weight``; ``res{S}{B}_branch{X}_weight`` ->
``{block}.conv_branch{X}.weight`` and ``bn{S}{B}_branch{X}_{gamma,beta,moving_mean,moving_var}`` ->
``{block}.bn_branch{X}.{weight,bias,running_mean,running_var}`` with block ``b{S}`` for B = ``a`` and ``b{S}_{k}``
for B = ``b{k}``; ``bn7_*`` -> ``bn7.*``. The 1000-class head ``linear1000_{weight,bias}`` is dropped; any other
array left unmapped is an error. The result must load strictly into ``wideresnet38`` or nothing is written.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO, Optional

import click
import numpy as np

from weight_conversion import describe_source, fit_to_backbone, input_convention, listing, user_errors, \
    write_converted
from wsss.errors import UserError

PROG = "convert_mxnet_params"
BACKBONE = "wideresnet38"
RELEASE_MD5 = "ff21f45d6bf03284100dcbec571edfad"  # ademxapp models/checksum.md5 (psa_affinitynet.md §1.1)

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
MAX_NDIM = 32  # a legacy magic is ndim; anything larger that is no known magic is refused
STORAGE_TYPES = {0: "default", 1: "row_sparse", 2: "csr"}
DEVICE_TYPES = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}
DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?"}

EXPECTED_DROPS = ("linear1000_weight", "linear1000_bias")
BN_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
AUX_LEAVES = ("moving_mean", "moving_var")
BLOCK_NAME = re.compile(r"(?P<kind>res|bn)(?P<stage>\d+)(?P<block>a|b\d+)_branch(?P<branch>1|2a|2b1|2b2)_(?P<leaf>.+)")
BN7_NAME = re.compile(r"bn7_(?P<leaf>.+)")


class Reader:
    """Little-endian reads from an open file; a short read is a :class:`UserError` naming what was being read."""

    def __init__(self, f: BinaryIO, source: str):
        self.f, self.source = f, source
        self.size = f.seek(0, 2)
        f.seek(0)

    def remaining(self) -> int:
        return self.size - self.f.tell()

    def bytes(self, n: int, what: str) -> bytearray:
        if n > self.remaining():
            raise UserError(f"{self.source}: truncated file: {what} needs {n} bytes at offset {self.f.tell()}, "
                            f"{self.remaining()} left")
        buf = bytearray(n)
        self.f.readinto(buf)
        return buf

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize("<" + fmt), what))


def _read_shape(r: Reader, magic: int, where: str) -> Optional[tuple]:
    """The shape after the magic; None for MXNet's empty ("none") array."""
    if magic in (V1_MAGIC, V2_MAGIC, V3_MAGIC):
        (ndim,) = r.unpack("i", f"{where} ndim")
        if (ndim == -1 and magic == V3_MAGIC) or (ndim == 0 and magic != V3_MAGIC):
            return None
        dim_fmt = "q"
    else:
        ndim, dim_fmt = magic, "I"
        if ndim == 0:
            return None
    if not 0 <= ndim <= MAX_NDIM:
        raise UserError(f"{r.source}: {where}: implausible ndim {ndim}")
    shape = r.unpack(f"{ndim}{dim_fmt}", f"{where} shape")
    if any(d < 0 for d in shape):
        raise UserError(f"{r.source}: {where}: negative dimension in shape {shape}")
    return shape


def read_array(r: Reader, index: int) -> Optional[np.ndarray]:
    """One ``NDArray::Save`` record: (magic, storage type, shape, context, dtype, data); None for a none array."""
    where = f"array #{index}"
    (magic,) = r.unpack("I", f"{where} magic")
    if magic in (V2_MAGIC, V3_MAGIC):
        (stype,) = r.unpack("i", f"{where} storage type")
        if stype != 0:
            raise UserError(f"{r.source}: {where}: storage type {stype} ({STORAGE_TYPES.get(stype, 'unknown')}) "
                            f"is not supported; only dense arrays (0) are read")
    elif magic != V1_MAGIC and magic > MAX_NDIM:
        raise UserError(f"{r.source}: {where}: unknown NDArray version (magic {magic:#010x}; known: "
                        f"V1 {V1_MAGIC:#x}, V2 {V2_MAGIC:#x}, V3 {V3_MAGIC:#x}, or a legacy ndim <= {MAX_NDIM})")
    shape = _read_shape(r, magic, where)
    if shape is None:
        return None
    dev_type, _dev_id, type_flag = r.unpack("iii", f"{where} context and type flag")
    if dev_type not in DEVICE_TYPES:
        raise UserError(f"{r.source}: {where}: unknown device type {dev_type} (known: {sorted(DEVICE_TYPES)})")
    if type_flag not in DTYPES:
        raise UserError(f"{r.source}: {where}: unsupported type flag {type_flag} (known: {sorted(DTYPES)})")
    dtype = np.dtype(DTYPES[type_flag])
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(r.bytes(count * dtype.itemsize, f"{where} data"), dtype=dtype).reshape(shape)


def read_ndarray_list(path: Path) -> list[tuple[str, Optional[np.ndarray]]]:
    """Read an MXNet ``.params`` / ``nd.save`` file: [(name, array or None)] in file order.

    Raises:
        UserError: wrong list magic, unknown array version, storage type, device or dtype, a truncated file,
            names missing or not one per array, or bytes after the names.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as f:
        r = Reader(f, str(path))
        (magic,) = r.unpack("Q", "list magic")
        if magic != LIST_MAGIC:
            raise UserError(f"{path}: not an MXNet NDArray list (magic {magic:#x}, expected {LIST_MAGIC:#x})")
        _reserved, count = r.unpack("QQ", "list header")
        if count * 4 > r.remaining():
            raise UserError(f"{path}: truncated file: {count} arrays announced, {r.remaining()} bytes left")
        arrays = [read_array(r, i) for i in range(count)]
        (n_names,) = r.unpack("Q", "name count")
        if n_names != count:
            raise UserError(f"{path}: {n_names} names for {count} arrays (a names-less nd.save list cannot be mapped)")
        names = []
        for i in range(n_names):
            (length,) = r.unpack("Q", f"name #{i} length")
            names.append(r.bytes(length, f"name #{i}").decode("utf-8", errors="replace"))
        if r.remaining():
            raise UserError(f"{path}: {r.remaining()} unexpected bytes after the names")
    return list(zip(names, arrays))


def map_name(name: str) -> Optional[str]:
    """Our ``wideresnet38`` key for an ademxapp name (with or without ``arg:``/``aux:``), else None.

    Example: ``"arg:res4b5_branch2b1_weight"`` -> ``"b4_5.conv_branch2b1.weight"``;
    ``"aux:bn3a_branch2a_moving_var"`` -> ``"b3.bn_branch2a.running_var"``.
    """
    prefix, _, base = name.rpartition(":")
    if prefix and prefix != ("aux" if base.endswith(AUX_LEAVES) else "arg"):
        return None
    if base == "conv1a_weight":
        return "conv1a.weight"
    m = BN7_NAME.fullmatch(base)
    if m:
        return f"bn7.{BN_LEAVES[m['leaf']]}" if m["leaf"] in BN_LEAVES else None
    m = BLOCK_NAME.fullmatch(base)
    if m is None:
        return None
    block = f"b{m['stage']}" if m["block"] == "a" else f"b{m['stage']}_{m['block'][1:]}"
    if m["kind"] == "res":
        return f"{block}.conv_branch{m['branch']}.weight" if m["leaf"] == "weight" else None
    return f"{block}.bn_branch{m['branch']}.{BN_LEAVES[m['leaf']]}" if m["leaf"] in BN_LEAVES else None


def map_names(names: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Split names into (mapped name -> our key, the expected 1000-class head, everything else unmapped).

    Raises:
        UserError: if two names map onto the same key.
    """
    mapped, dropped, unmapped = {}, [], []
    for name in names:
        key = map_name(name)
        if key is not None:
            mapped[name] = key
        elif name.rpartition(":")[2] in EXPECTED_DROPS and not name.startswith("aux:"):
            dropped.append(name)
        else:
            unmapped.append(name)
    seen = {}
    for name, key in mapped.items():
        if key in seen:
            raise UserError(f"{name} and {seen[key]} both map onto {key}")
        seen[key] = name
    return mapped, dropped, unmapped


def convert(src: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read ``src`` and map it: (our key -> array, the names dropped on purpose).

    Raises:
        UserError: an unreadable file, an empty array, duplicate names, or any array other than the 1000-class
            head that maps onto no ``wideresnet38`` key (all such names are listed).
    """
    items = read_ndarray_list(src)
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise UserError(f"{src}: duplicate array names")
    mapped, dropped, unmapped = map_names(names)
    if unmapped:
        raise UserError(f"{src}: {listing(unmapped)} arrays map onto no {BACKBONE} key (only the 1000-class "
                        f"head {', '.join(EXPECTED_DROPS)} is expected to be left out)")
    empty = [name for name, array in items if array is None and name in mapped]
    if empty:
        raise UserError(f"{src}: {listing(empty)} arrays are empty (MXNet none arrays)")
    return {mapped[name]: array for name, array in items if name in mapped}, dropped


@click.command(PROG)
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT and its .json sidecar if they exist.")
def main(src: Path, out: Path, overwrite: bool) -> None:
    """Convert SRC (.params) into OUT (.pth, wideresnet38 keys) and OUT's .json sidecar."""
    with user_errors(PROG):
        arrays, dropped = convert(src)
        arrays = fit_to_backbone(arrays, BACKBONE, str(src))
        source = describe_source(src, RELEASE_MD5)
        sidecar = {"backbone": BACKBONE, "converter": f"tools/{PROG}.py", **source, "dropped": dropped,
                   "input": input_convention(BACKBONE)}
        count = write_converted(out, arrays, sidecar, overwrite)
    click.echo(f"{out}: {len(arrays)} tensors, {count:,} values for {BACKBONE}; dropped as expected: "
               f"{', '.join(dropped) or 'nothing'}")
    if not source["is_release"]:
        click.echo(f"note: md5 {source['source_md5']} is not the ademxapp release's ({RELEASE_MD5})", err=True)


if __name__ == "__main__":
    main()
