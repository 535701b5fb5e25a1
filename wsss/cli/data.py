"""``wsss data toy`` and ``wsss data prepare voc|coco|folder``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from wsss.cli.options import COUNT, out_option, overwrite_option, workers_option
from wsss.errors import UserError


@click.group()
def data() -> None:
    """Write toy data in the real VOC/SBD or COCO layout, or prepare real data."""


@data.command()
@out_option
@click.option("--format", "fmt", type=click.Choice(["voc", "coco"]), default="voc", show_default=True,
              help="voc: VOCdevkit/VOC2012 + benchmark_RELEASE; coco: the COCO 2014 release layout.")
@click.option("--n-train", type=COUNT, default=200, show_default=True, help="Train images.")
@click.option("--n-val", type=COUNT, default=50, show_default=True, help="Val images.")
@click.option("--size", type=click.IntRange(min=32), default=112, show_default=True,
              help="Long side of every image, in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@overwrite_option
def toy(out: Path, fmt: str, n_train: int, n_val: int, size: int, seed: int, overwrite: bool) -> None:
    """Synthetic images in the real VOC 2012 + SBD layouts, or in the COCO 2014 release layout."""
    from wsss.data.toy import write_toy
    from wsss.data.toy_coco import write_toy_coco

    _refuse_unless_empty(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        written = (write_toy if fmt == "voc" else write_toy_coco)(tmp, n_train=n_train, n_val=n_val, size=size,
                                                                  seed=seed)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if fmt == "coco":
        click.echo(f"wrote toy COCO 2014 data to {out}: train {len(written.images['train'])} images "
                   f"({len(written.kept['train'])} with objects), val {len(written.images['val'])} "
                   f"({len(written.kept['val'])}) (prepare with: wsss data prepare coco --coco-root {out} --out DATA)")
        return
    click.echo(f"wrote toy data to {out}: VOC train {len(written.voc_train)}, val {len(written.voc_val)}; "
               f"SBD train {len(written.sbd_train)}, val {len(written.sbd_val)} "
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
    """Split lists, image-level labels and masks as PNG, in a prepared --data folder."""


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
    from wsss.process import setup_logging

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
@click.option("--coco-root", type=click.Path(path_type=Path), required=True,
              help="COCO 2014 folder: train2014/, val2014/, annotations/instances_{train,val}2014.json.")
@click.option("--crowd", type=click.Choice(["background", "ignore"]), default="background", show_default=True,
              help="Crowd regions in the masks: background (the community convention) or 255 (ignored).")
@out_option
@workers_option
@overwrite_option
def coco(coco_root: Path, crowd: str, out: Path, workers, overwrite: bool) -> None:
    """MS-COCO 2014: 80 classes + background; train and val lists of the images with objects.

    Masks are written on --workers processes (default: the CPUs, at most 8).
    """
    from wsss.data.coco import prepare_coco
    from wsss.process import setup_logging

    setup_logging()
    m = prepare_coco(coco_root, out, crowd=crowd, workers=workers, overwrite=bool(overwrite))
    for name, c in m.extra["splits"].items():
        click.echo(f"{name}: {c['ids']} ids of {c['images']} images ({c['images'] - c['ids']} dropped: "
                   f"{c['no_annotations']} without annotations, {c['no_objects']} with no labelled pixel)")
    rule = m.extra["mask_rule"]
    click.echo(f"prepared {out}: {m.num_items} labelled ids, {len(m.extra['classes'])} classes + background "
               f"(crowd: {rule['crowd']}, overlaps: {rule['overlap'].replace('_', ' ')})")


@prepare.command()
@click.option("--images", type=click.Path(path_type=Path), required=True, help="Folder of images (searched "
              "recursively); an image's id is its file name without extension.")
@click.option("--labels", type=click.Path(path_type=Path), required=True,
              help="Image-level labels: .json {image: [class names]} or .csv (image,labels or one 0/1 column per "
                   "class).")
@click.option("--classes", type=click.Path(path_type=Path), required=True,
              help="Text file, one foreground class name per line in label order 1..C.")
@click.option("--masks", type=click.Path(path_type=Path), default=None,
              help="Folder of {id}.png ground-truth masks (0 background, 1..C, 255 ignore), for evaluation.")
@click.option("--splits", type=click.Path(path_type=Path), default=None,
              help="Folder of {name}.txt split lists (default: one split 'train' with every image).")
@out_option
@workers_option
@overwrite_option
def folder(images: Path, labels: Path, classes: Path, masks, splits, out: Path, workers, overwrite: bool) -> None:
    """Your own data: images + image-level labels (+ masks), any class list.

    Masks are checked and rewritten on --workers processes (default: the CPUs, at most 8).
    """
    from wsss.data.folder import prepare_folder
    from wsss.process import setup_logging

    setup_logging()
    m = prepare_folder(images, labels, classes, out, masks=masks, splits=splits, workers=workers,
                       overwrite=bool(overwrite))
    for name, c in m.extra["splits"].items():
        click.echo(f"{name}: {c['ids']} ids ({c['masks']} with masks)")
    click.echo(f"prepared {out}: {m.num_items} labelled images, {len(m.extra['classes'])} classes + background")
