"""The one table of stages: command names, pipeline stage names, the order of ``wsss compare`` all come from here.

A row names a stage module ``wsss.stages.<name>`` (which defines ``STAGE`` and ``run``) and the command that runs
it. The command line (:mod:`wsss.cli.stage_commands`) builds ``wsss <group> <command>`` with the options of the
stage's config; pipelines run stages by name; ``wsss compare`` orders the rows of a method by the row order here.
Adding a method adds rows (and, for a new command group, a line to ``GROUPS``). This module imports nothing heavy,
so that ``wsss --help`` stays fast.
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class StageRow:
    """One stage: ``name`` (module, recipe ``run:`` value, manifest stage), its command, one line of help."""

    name: str
    group: Optional[str]
    command: Optional[str]
    help: str

    @property
    def module(self) -> str:
        return f"wsss.stages.{self.name}"


# Command groups that the table's stages make up: name -> one line of help.
GROUPS = {
    "cam": "Train the CAM classifier and infer multi-scale CAMs (PSA); import the reference's CAM files.",
    "seam": "Train SEAM (CAM + Pixel Correlation Module, equivariance losses) and infer its multi-scale CAMs.",
    "crf": "Dense-CRF pseudo labels from CAMs (PSA/SEAM low and high alpha, IRN's IR labels).",
    "aff": "Train AffinityNet and refine CAMs by random walk.",
    "irn": "Train IRN's boundary and displacement network on IR labels; walk CAMs along its boundaries.",
    "single": "Train and run the single-stage network (or its baseline).",
    "seg": "Retrain a segmentation network (DeepLab) on pseudo labels, infer with it, pack the VOC test archive.",
}

STAGES = (
    StageRow("cam_train", "cam", "train", "Train the classifier on image-level labels (PSA recipe by default)."),
    StageRow("cam_infer", "cam", "infer", "Multi-scale + flip CAMs of every image of a split, as a `cam` artifact."),
    StageRow("cam_import", "cam", "import",
             "Import the reference code's .npy dicts (PSA/SEAM CAMs or CRF results) as a wsss artifact."),
    StageRow("seam_train", "seam", "train", "Train SEAM on image-level labels (SEAM's recipe by default)."),
    StageRow("seam_infer", "seam", "infer", "SEAM's multi-scale + flip CAMs (PCM output) of every image of a split, "
                                            "as a `cam` artifact."),
    StageRow("crf_labels", "crf", "labels", "CRF labels of every image of a split from its CAMs, as a `label` "
                                            "artifact."),
    StageRow("aff_train", "aff", "train", "Train AffinityNet on pair labels from the la/ha CRF labels (PSA recipe "
                                          "by default)."),
    StageRow("aff_infer", "aff", "infer", "Random-walk labels of every image of a split from its CAMs, as a `label` "
                                          "artifact."),
    StageRow("irn_train", "irn", "train", "Train IRN's inter-pixel relation network on IR labels, then estimate its "
                                          "mean shift (IRN recipe by default)."),
    StageRow("irn_infer", "irn", "infer", "Boundary random-walk labels of every image of a split from its stride-4 "
                                          "CAMs, as a `label` artifact."),
    StageRow("single_train", "single", "train", "Train on image-level labels (the reference recipe of the backbone "
                                                "by default)."),
    StageRow("single_infer", "single", "infer", "Multi-scale + flip segmentation of every image of a split, as a "
                                                "`label` artifact."),
    StageRow("seg_import", "seg", "import", "Import a plain folder of label PNGs (another tool's pseudo labels) as a "
                                            "`label` artifact."),
    StageRow("seg_train", "seg", "train", "Train a segmentation network on pseudo labels (deeplab-pytorch's "
                                          "DeepLab-v2 recipe by default)."),
    StageRow("seg_infer", "seg", "infer", "Multi-scale (+ flip, + CRF) labels of every image of a split from the "
                                          "retrained network, as a `label` artifact."),
    StageRow("seg_pack", "seg", "pack", "Pack the labels of VOC test as the evaluation server's results.tar.gz."),
    StageRow("eval", None, None, "mIoU of label PNGs, or a background-threshold sweep over CAMs."),
)

# Artifacts written by a stage as a by-product (their manifests name these stages); compared after their parent.
SUB_STAGES = {"cam_png": "cam_infer", "import_cam": "cam_import", "import_crf": "cam_import",
              "import_irn": "cam_import"}


def stage_row(name: str) -> StageRow:
    """The row of a stage name (KeyError for an unknown one)."""
    return {row.name: row for row in STAGES}[name]


def stage_names() -> list[str]:
    return [row.name for row in STAGES]


def group_rows(group: str) -> list[StageRow]:
    return [row for row in STAGES if row.group == group]


def compare_order(stage: str) -> float:
    """Position of a stage (or by-product) in the table: ``wsss compare`` sorts a method's rows by it."""
    names = stage_names()
    if stage in SUB_STAGES:
        return names.index(SUB_STAGES[stage]) + 0.5
    return names.index(stage) if stage in names else len(names)
