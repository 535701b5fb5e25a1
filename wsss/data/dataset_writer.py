"""Writing a prepared dataset folder from a source other than VOC (COCO 2014, a folder of the user's images).

Such a folder has the layout of :mod:`wsss.data.prepare`, plus ``images.json``: ``{id: path relative to the
manifest's image_root}``, so :class:`wsss.data.prepared.PreparedData` finds every image without a naming rule.
All masks are written by wsss into ``DATA/masks/{id}.png`` (palette PNG, 0 background, 1..C, 255 ignore).

Masks are built by jobs (one per image) that run here or on joblib worker processes, with a progress bar on a
terminal. A job whose mask is already on disk (a killed run being resumed) only reads it back.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from wsss.artifacts import Manifest, OutputDir, write_json_atomic
from wsss.data.palette import read_label_png, write_label_png
from wsss.data.prepare import IMAGES_FILE, LABELS_FILE, MASKS_DIR, SPLITS_DIR, palette_to_hex
from wsss.data.voc import classes_present
from wsss.process import LOG


def default_workers() -> int:
    """Worker processes of ``wsss data prepare coco|folder`` when ``--workers`` is not given: CPUs, at most 8."""
    return min(8, os.cpu_count() or 1)


def mask_job(out_dir: OutputDir, image_id: str, num_classes: int, palette: Sequence[int], keep_empty: bool,
             build: Callable, *args) -> list[int]:
    """One image: write ``masks/{id}.png`` from ``build(*args)`` (uint8 (H, W)) unless it is already there.

    Args:
        keep_empty: write a mask without foreground too (else such a mask is not written: the image leaves the
            lists, and a resumed run builds it again).
        build: a module-level function (it is sent to worker processes).

    Returns:
        The 0-based foreground classes present in the mask, sorted.
    """
    final = out_dir.item_path(f"{MASKS_DIR}/{image_id}", ".png")
    if final.is_file():
        return [int(c) for c in classes_present(read_label_png(final), num_classes)]
    mask = build(*args)
    classes = [int(c) for c in classes_present(mask, num_classes)]
    if classes or keep_empty:
        out_dir.write_item(f"{MASKS_DIR}/{image_id}", ".png", lambda path: write_label_png(path, mask, palette))
    return classes


def run_jobs(fn: Callable, jobs: list[tuple], workers: int, unit: str = "mask") -> list:
    """``fn(*job)`` for every job, results in job order: here when ``workers`` <= 1, else on joblib processes.

    A progress bar is drawn on a terminal (tqdm); a log line gives the rate at the end. A job's exception stops
    the run and is raised here.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    if workers <= 1:
        results: Iterator = (fn(*job) for job in jobs)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=workers, backend="loky", return_as="generator")(delayed(fn)(*job) for job in jobs)
    done = list(tqdm(results, total=len(jobs), unit=unit, disable=None, dynamic_ncols=True))
    seconds = time.perf_counter() - t0
    LOG.info("%d %ss in %.1f s (%.1f %ss/s on %d worker(s))", len(jobs), unit, seconds,
             len(jobs) / max(seconds, 1e-9), unit, max(workers, 1))
    return done


def write_prepared(out_dir: OutputDir, splits: dict[str, list[str]], labels: dict[str, list[int]],
                   image_files: dict[str, str], extra: dict) -> Manifest:
    """Write the split lists, ``labels.json`` and ``images.json``, then ``manifest.json`` (the folder is complete).

    Args:
        splits: split name -> ids (written sorted).
        labels: id -> 0-based foreground classes, for every id of every split.
        image_files: id -> image path relative to ``extra["image_root"]``.
        extra: the manifest's ``extra`` (classes, palette, image_root, source, ...); ``splits`` counts are added
            by the caller.
    """
    (out_dir.folder / SPLITS_DIR).mkdir(exist_ok=True)
    for name, ids in splits.items():
        text = "".join(f"{i}\n" for i in sorted(ids))
        out_dir.write_item(f"{SPLITS_DIR}/{name}", ".txt", lambda path, text=text: path.write_text(text))
    write_json_atomic(out_dir.folder / LABELS_FILE, {i: labels[i] for i in sorted(labels)})
    write_json_atomic(out_dir.folder / IMAGES_FILE, {i: image_files[i] for i in sorted(image_files)})
    return out_dir.complete(num_items=len(labels), split=None, extra=extra)


def base_extra(source: str, classes: Sequence[str], palette: Sequence[int], image_root: Path,
               label_source: str, mask_rule: Optional[dict] = None) -> dict:
    """The manifest facts every non-VOC prepared folder records (what :func:`open_dataset` reads)."""
    extra = {"source": source, "classes": list(classes), "palette": palette_to_hex(palette),
             "image_root": str(image_root), "label_source": label_source}
    if mask_rule is not None:
        extra["mask_rule"] = mask_rule
    return extra
