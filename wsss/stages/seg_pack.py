"""``wsss seg pack``: a ``label`` artifact of VOC ``test`` packed as the PASCAL VOC evaluation server's archive.

``results/VOC2012/Segmentation/{comp}_{split}_cls/{id}.png``, palette PNGs with the VOC colour map, in a
``.tar.gz`` (:func:`wsss.data.voc_pack.pack_voc_results`). Before anything is written every id of the split must
have exactly one PNG (none for another id), of its image's size, with values 0..20 (no 255). On what looks like
the real VOC 2012 (1,464 train and 1,449 val ids) the ``test`` split must have its 1,456 ids. The archive is
written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from wsss.artifacts.items import open_items
from wsss.config import option, runtime
from wsss.errors import UserError


@dataclasses.dataclass(frozen=True)
class SegPackConfig:
    data: Optional[Path] = option(None, "Prepared dataset folder (from `wsss data prepare`).", required=True)
    pred: Optional[Path] = option(None, "The `label` artifact to pack (from `wsss seg infer`).", required=True)
    out: Optional[Path] = option(None, "The archive to write (.tar.gz or .tgz).", required=True)
    split: str = option("test", "Split the labels are for (the folder name says it too).")
    comp: str = option("comp6", "Competition: comp6 (own training data allowed, e.g. ImageNet/COCO init) or "
                                "comp5 (VOC data only).", type="choice:comp5|comp6")
    overwrite: bool = runtime(False, "Replace an existing archive.", type="flag")


def looks_like_real_voc(data) -> bool:
    """1,464 train and 1,449 val ids: the real VOC 2012 (whose test split then must have 1,456 ids)."""
    from wsss.data.prepare import REAL_COUNTS

    splits = data.splits()
    return all(s in splits and len(data.ids(s)) == REAL_COUNTS[s] for s in ("train", "val"))


class SegPack:
    """Checks a label artifact against a split and writes the server archive (not a per-image stage)."""

    name, config = "seg_pack", SegPackConfig

    def run(self, cfg: SegPackConfig) -> dict:
        """Pack ``cfg.pred``; returns ``{"archive", "folder", "num_items", "sha256"}``."""
        from PIL import Image

        from wsss.data.prepare import REAL_COUNTS
        from wsss.data.prepared import open_dataset
        from wsss.data.voc_pack import pack_voc_results

        if cfg.data is None or cfg.pred is None or cfg.out is None:
            raise UserError("seg pack: --data, --pred and --out are required")
        data = open_dataset(cfg.data)
        ids = data.ids(cfg.split)
        manifest = open_items(Path(cfg.pred), "label", "--pred", require_manifest=False)
        if manifest is not None and manifest.split not in (None, cfg.split):
            raise UserError(f"--pred {cfg.pred}: labels of split '{manifest.split}', not of '{cfg.split}'")
        sizes = {}
        for image_id in ids:
            with Image.open(data.image_path(image_id)) as im:
                sizes[image_id] = (im.height, im.width)
        expected = REAL_COUNTS["test"] if cfg.split == "test" and looks_like_real_voc(data) else None
        try:
            return pack_voc_results(Path(cfg.pred), ids, sizes, Path(cfg.out), comp=cfg.comp, testset=cfg.split,
                                    num_classes=data.num_classes + 1, expected_count=expected,
                                    overwrite=bool(cfg.overwrite))
        except ValueError as e:
            raise UserError(f"seg pack: {e}") from None

    def summary(self, result: dict) -> str:
        return (f"seg pack: {result['num_items']} PNGs in {result['archive']} ({result['folder']}/, "
                f"sha256 {result['sha256'][:16]})")


STAGE = SegPack()
run = STAGE.run
