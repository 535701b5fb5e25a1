"""``wsss seg import``: a plain folder of label PNGs (another tool's pseudo labels) turned into a ``label`` artifact.

The explicit way in for SEAM's ``out_rw``, IRN's ``sem_seg``, CLIP-ES's pseudo masks, 1-stage-wseg's
``train_results_clean`` or any other ``{id}.png`` folder, so that ``wsss seg train --labels`` only ever reads
artifacts. Nothing is guessed: 'L' and 'P' PNGs are read as their index values (RGB PNGs are refused); every id
of ``--split`` must have a PNG and no PNG may belong to an id outside it; each map must have its image's size and
hold only 0..C (0 = background) or 255 (ignore), all checked before anything is written. The maps are rewritten
with the dataset's palette, and the source folder is recorded in the manifest. A changed source folder needs
``--overwrite`` (a plain folder has no manifest whose digest would tell).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from wsss.artifacts.items import FORMATS, split_items
from wsss.config import option
from wsss.engine.inference import Context, InferenceStage, InferStageConfig
from wsss.stages.seg_train import check_label_files


@dataclasses.dataclass(frozen=True)
class SegImportConfig(InferStageConfig):
    src: Optional[Path] = option(None, "Plain folder of {id}.png label maps (palette or grayscale indices).",
                                 required=True)


class SegImport(InferenceStage):
    """Checked copy of a plain PNG label folder as a ``label`` artifact."""

    name, config, kind = "seg_import", SegImportConfig, "label"
    required = ("data", "src", "out")

    def check_inputs(self, cfg, data, ids: list) -> None:
        split_items(Path(cfg.src), "label", cfg.split, ids, "--src")
        check_label_files(Path(cfg.src), data, ids, "--src", data.num_classes)

    def input_artifacts(self, cfg) -> dict:
        return {"src": cfg.src}

    def predict(self, ctx: Context, image_id: str) -> np.ndarray:
        """The source map (checked with every other one before anything was written)."""
        fmt = FORMATS["label"]
        return fmt.read(fmt.path(ctx.cfg.src, image_id))

    def manifest_extra(self, ctx: Context) -> dict:
        return {"classes": list(ctx.data.classes), "source": str(Path(ctx.cfg.src).resolve())}


STAGE = SegImport()
run = STAGE.run
