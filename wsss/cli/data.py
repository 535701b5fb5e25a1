"""``wsss data toy`` and ``wsss data prepare voc|coco``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from wsss.cli.options import COUNT, out_option, overwrite_option
from wsss.errors import UserError


@click.group()
def data() -> None:
    """Write toy data in the real VOC/SBD layout, or prepare real data."""


@data.command()
@out_option
@click.option("--n-train", type=COUNT, default=200, show_default=True, help="VOC train images.")
@click.option("--n-val", type=COUNT, default=50, show_default=True, help="VOC val images.")
@click.option("--size", type=click.IntRange(min=32), default=112, show_default=True,
              help="Long side of every image, in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@overwrite_option
def toy(out: Path, n_train: int, n_val: int, size: int, seed: int, overwrite: bool) -> None:
    """Synthetic images in the real VOCdevkit/VOC2012 and benchmark_RELEASE/dataset layouts."""
    from wsss.data.toy import write_toy

    _refuse_unless_empty(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        splits = write_toy(tmp, n_train=n_train, n_val=n_val, size=size, seed=seed)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    click.echo(f"wrote toy data to {out}: VOC train {len(splits.voc_train)}, val {len(splits.voc_val)}; "
               f"SBD train {len(splits.sbd_train)}, val {len(splits.sbd_val)} "
               f"(prepare with: wsss data prepare voc --voc-root {out / 'VOCdevkit' / 'VOC2012'} "
               f"--sbd-root {out / 'benchmark_RELEASE'} --out DATA)")


def _refuse_unless_empty(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        if not overwrite:
            raise UserError(f"--out {out}: is a regular file, not a folder (use --overwrite to replace it)")
        out.unlink()
    elif out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out}: folder is not empty; refusing to touch it (use --overwrite to replace it)")
        shutil.rmtree(out)


@data.group()
def prepare() -> None:
    """Split lists, image-level labels and SBD masks as PNG, in a prepared --data folder."""


@prepare.command()
@click.option("--voc-root", type=click.Path(path_type=Path), required=True,
              help="VOCdevkit/VOC2012 of VOCtrainval_11-May-2012.tar.")
@click.option("--sbd-root", type=click.Path(path_type=Path), default=None,
              help="benchmark_RELEASE of SBD's benchmark.tgz (needed for train_aug).")
@out_option
@overwrite_option
def voc(voc_root: Path, sbd_root: Path, out: Path, overwrite: bool) -> None:
    """PASCAL VOC 2012 (+ SBD): train, val, trainval, train_aug, test."""
    from wsss.data.prepare import prepare_voc
    from wsss.runtime import setup_logging

    setup_logging()
    manifest = prepare_voc(voc_root=voc_root, sbd_root=sbd_root, out=out, overwrite=bool(overwrite))
    for line in summary_lines(manifest.extra["splits"], with_sbd=manifest.extra.get("sbd_root") is not None):
        click.echo(line)
    click.echo(f"prepared {out}: {manifest.num_items} labelled ids, {len(manifest.extra['classes'])} classes")


def summary_lines(splits: dict, with_sbd: bool) -> list[str]:
    """One line per split: id count and where its masks come from."""
    lines = []
    for name, c in splits.items():
        if c["voc_masks"] + c["sbd_masks"] == 0:
            lines.append(f"{name}: {c['ids']} ids (no masks)")
        else:
            lines.append(f"{name}: {c['ids']} ids ({c['voc_masks']} VOC masks, {c['sbd_masks']} SBD masks)")
    if not with_sbd:
        lines.append("train_aug: not written (no --sbd-root given)")
    return lines


@prepare.command()
@click.option("--coco-root", type=click.Path(path_type=Path), required=True, help="COCO 2014 folder.")
@out_option
@overwrite_option
def coco(coco_root: Path, out: Path, overwrite: bool) -> None:
    """MS-COCO 2014 (not available in this version)."""
    raise UserError("wsss data prepare coco: COCO 2014 is not available yet in this version; "
                    "only `wsss data prepare voc` is")
