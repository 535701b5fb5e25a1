"""The per-image loop every inference stage shares: this rank's ids, resume, atomic items, the manifest last."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from wsss.artifacts import ITEM_SUFFIX, Manifest, OutputDir, read_manifest
from wsss.engine.distributed import DistInfo, barrier, shard
from wsss.runtime import LOG

# compute(todo ids) yields (id, write) pairs; write(path) writes that id's item file.
ItemWriter = Callable[[Path], None]


def write_items(out: OutputDir, ids: list, dist: DistInfo, compute: Callable[[list], Iterable[tuple[str, ItemWriter]]],
                *, split: Optional[str], extra: Optional[dict] = None) -> Manifest:
    """Write the items of ``ids`` that this rank owns and that are not there yet, then complete on rank 0.

    A complete folder (``out.state == "done"``) is left alone. Items are written through
    :meth:`OutputDir.write_item` (temporary name, then rename), so a killed run resumes with what is missing.
    """
    if out.state == "done":
        LOG.info("%s: complete '%s' artifact of the same config and inputs: nothing to do", out.folder, out.kind)
        return read_manifest(out.folder, kind=out.kind)
    suffix = ITEM_SUFFIX[out.kind]
    todo = [i for i in shard(ids, dist) if not out.has_item(i, suffix)]
    LOG.info("%s: %d of %d ids to do on rank %d (%s)", out.stage, len(todo), len(ids), dist.rank, out.state)
    for image_id, write in compute(todo):
        out.write_item(image_id, suffix, write)
    barrier()
    if dist.is_main:
        out.complete(num_items=len(ids), split=split, extra=extra)
    barrier()
    return read_manifest(out.folder, kind=out.kind)


def each(todo: list, item: Callable[[str], ItemWriter]) -> Iterator[tuple[str, ItemWriter]]:
    """The simplest ``compute``: one call of ``item(id)`` per id, in order."""
    for image_id in todo:
        yield image_id, item(image_id)
