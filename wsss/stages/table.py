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
    "crf": "Dense-CRF pseudo labels from CAMs (PSA/SEAM low and high alpha).",
    "aff": "Train AffinityNet and refine CAMs by random walk.",
    "single": "Train and run the single-stage network (or its baseline).",
}

STAGES = (
    StageRow("cam_train", "cam", "train", "Train the classifier on image-level labels (PSA recipe by default)."),
    StageRow("cam_infer", "cam", "infer", "Multi-scale + flip CAMs of every image of a split, as a `cam` artifact."),
    StageRow("cam_import", "cam", "import",
             "Import the reference code's .npy dicts (PSA/SEAM CAMs or CRF results) as a wsss artifact."),
    StageRow("crf_labels", "crf", "labels", "CRF labels of every image of a split from its CAMs, as a `label` "
                                            "artifact."),
    StageRow("aff_train", "aff", "train", "Train AffinityNet on pair labels from the la/ha CRF labels (PSA recipe "
                                          "by default)."),
    StageRow("aff_infer", "aff", "infer", "Random-walk labels of every image of a split from its CAMs, as a `label` "
                                          "artifact."),
    StageRow("single_train", "single", "train", "Train on image-level labels (the reference recipe of the backbone "
                                                "by default)."),
    StageRow("single_infer", "single", "infer", "Multi-scale + flip segmentation of every image of a split, as a "
                                                "`label` artifact."),
    StageRow("eval", None, None, "mIoU of label PNGs, or a background-threshold sweep over CAMs."),
)

# Artifacts written by a stage as a by-product (their manifests name these stages); compared after their parent.
SUB_STAGES = {"cam_png": "cam_infer", "import_cam": "cam_import", "import_crf": "cam_import"}


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
