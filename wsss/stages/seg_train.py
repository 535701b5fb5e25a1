"""``wsss seg train``: a fully-supervised segmentation network retrained on pseudo labels (stage 2 of WSSS).

The labels are a ``label`` artifact (``aff infer``, ``single infer --clean``, ``crf labels``, the SEAM and IRN label
stages, or a plain PNG folder imported with ``wsss seg import``) covering the training split; the ground-truth
masks are never read for training: the dataset's masks come from ``--labels`` alone. A ``--labels`` folder whose
maps equal the dataset's ground truth is refused unless ``--allow-ground-truth`` (that would be full supervision).

Defaults are deeplab-pytorch's DeepLab-v2 recipe; ``--recipe`` selects another published one
(:mod:`wsss.stages.seg_recipes`, which lists them with their departures). The loss (:class:`SegTrainModule`) is
plain or balanced cross-entropy summed over every logits map the network returns (the 4 MSC outputs of
DeepLab-v2, torchvision's aux head at 0.5), each against the labels nearest-resized to its size. Batch norm is the
network's reference mode unless ``--bn`` says otherwise (DeepLab-v2: frozen; SEAM's head: "as reference").
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
from PIL import Image

from wsss.artifacts.items import FORMATS, check_covers
from wsss.config import option, preset_option
from wsss.data.transforms import DEEPLAB_SCALES
from wsss.engine.stage import TrainingStage, TrainStageConfig
from wsss.errors import UserError
from wsss.models.registry import check_family
from wsss.models.train_module import TrainModule
from wsss.ops import IGNORE_INDEX
from wsss.stages.seg_recipes import TRAIN_PRESETS

FAMILY = "seg"
GROUND_TRUTH_PROBE = 8  # ids compared with the ground truth before training
BN_CHOICES = ("frozen", "train", "as_reference")


@dataclasses.dataclass(frozen=True)
class SegTrainConfig(TrainStageConfig):
    PRESETS: ClassVar[dict] = TRAIN_PRESETS

    labels: Optional[Path] = option(None, "Pseudo labels: a `label` artifact covering --split.", required=True)
    recipe: str = preset_option(TRAIN_PRESETS, "dlp-coco", "Published recipe (its values sit under --config and "
                                                           "the flags):")
    model: str = option("deeplabv2_resnet101", "Segmentation network.", type=f"model:{FAMILY}")
    backbone: Optional[str] = option(None, "Backbone (default: the network's reference one).", type="backbone")
    loss: str = option("ce", "Cross-entropy, or the balanced one (1/2 background + 1/2 foreground mean).",
                       type="choice:ce|balanced_ce")
    bn: Optional[str] = option(None, "Batch norm in training (default: the network's reference mode).",
                               type="choice:" + "|".join(BN_CHOICES))
    allow_ground_truth: bool = option(False, "Accept --labels equal to the ground-truth masks.", type="flag")
    head: Optional[str] = None  # deeplabv1_resnet38: sscb (SEAM's retrain) or psa (PSA lineage)
    msc_scales: tuple = (0.5, 0.75)  # deeplabv2_resnet101's multi-scale inputs; () = the plain network
    lr: float = 2.5e-4
    weight_decay: float = 5e-4
    batch_size: int = 5
    accum_steps: int = 2
    max_iters: Optional[int] = 20000
    poly_every: int = 10
    val_every: int = 0
    crop: int = option(321, "Training crop size in pixels.", type="count")
    scale_choices: Optional[tuple] = option(DEEPLAB_SCALES, "Rescale factors, one drawn per image.", type="floats")
    scale_range: Optional[tuple] = None
    short_side_range: Optional[tuple] = None
    interpolation: str = "bilinear"
    pad_side: str = "bottom_right"
    crop_pad: str = "zero"
    flip: bool = True
    jitter: Optional[tuple] = None

    def __post_init__(self):
        super().__post_init__()
        check_family(self.model, FAMILY)
        for name, value, allowed in (("loss", self.loss, ("ce", "balanced_ce")), ("bn", self.bn, BN_CHOICES),
                                     ("head", self.head, ("sscb", "psa"))):
            if value is not None and value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    def transform_recipe(self):
        """Random rescale (choice, range or short side), flip, optional jitter, padded crop."""
        from wsss.data.transforms import JointTransformConfig

        return JointTransformConfig(scale_choices=self.scale_choices, scale_range=self.scale_range,
                                    short_side_range=self.short_side_range, interpolation=self.interpolation,
                                    flip=self.flip, jitter=self.jitter, crop=self.crop, crop_pad=self.crop_pad,
                                    pad_side=self.pad_side)


def network_kwargs(cfg: SegTrainConfig, num_classes: int) -> dict:
    """Builder arguments of ``cfg.model``: classes, backbone, MSC scales, head and batch-norm mode where it has them."""
    from wsss.models.registry import model_entry

    entry = model_entry(cfg.model)
    params = inspect.signature(entry.builder).parameters
    kwargs: dict = {"num_classes": num_classes}
    if cfg.backbone is not None:
        if cfg.backbone not in entry.backbones:
            raise UserError(f"--backbone {cfg.backbone}: {cfg.model} takes "
                            f"{', '.join(entry.backbones) or 'no --backbone'}")
        kwargs["backbone"] = cfg.backbone
    if "msc_scales" in params:
        kwargs["msc_scales"] = tuple(cfg.msc_scales)
    if cfg.head is not None:
        if "head" not in params:
            raise UserError(f"head {cfg.head!r}: {cfg.model} has one head")
        kwargs["head"] = cfg.head
    if cfg.bn is not None:
        if "bn_mode" in params:
            kwargs["bn_mode"] = cfg.bn
        elif "backbone_kwargs" in params and cfg.bn != "as_reference":
            kwargs["backbone_kwargs"] = {"freeze_bn": cfg.bn == "frozen"}
        else:
            raise UserError(f"--bn {cfg.bn}: not available for {cfg.model}")
    return kwargs


def checked_labels(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """``labels`` (H, W) uint8 if every value is a class index 0..num_classes or the ignore value 255."""
    bad = (labels > num_classes) & (labels != IGNORE_INDEX)
    if bad.any():
        raise UserError(f"{path}: holds label {int(labels[bad][0])}; expected 0..{num_classes} (0 = background) "
                        f"or {IGNORE_INDEX} (ignore)")
    return labels


def check_label_files(folder: Path, data, ids: list, option_name: str,
                      num_classes: Optional[int] = None) -> None:
    """Every label PNG of ``ids`` has its image's size (file headers only), and with ``num_classes`` (read in full)
    values in 0..num_classes or 255."""
    fmt = FORMATS["label"]
    for image_id in ids:
        path = fmt.path(folder, image_id)
        if num_classes is not None:
            height, width = checked_labels(fmt.read(path), num_classes, path).shape
        else:
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except OSError as e:
                raise UserError(f"{option_name} {path}: cannot read the label PNG ({e})") from None
        with Image.open(data.image_path(image_id)) as im:
            if im.size != (width, height):
                raise UserError(f"{option_name} {path}: label map is {width}x{height}, its image is "
                                f"{im.size[0]}x{im.size[1]}")


def refuse_ground_truth(folder: Path, data, ids: list) -> None:
    """Refuse labels whose first few maps (of ids with a mask) all equal the ground truth."""
    fmt = FORMATS["label"]
    probe = list(itertools.islice((i for i in ids if data.has_mask(i)), GROUND_TRUTH_PROBE))
    if probe and all(np.array_equal(fmt.read(fmt.path(folder, i)), data.read_mask(i)) for i in probe):
        raise UserError(f"--labels {folder}: its label maps equal the ground-truth masks ({len(probe)} checked): "
                        f"that is fully supervised training; pass --allow-ground-truth to do it anyway")


def pseudo_label_reader(folder: Path, num_classes: int):
    """``id -> uint8 (H, W)`` from the label artifact, values checked."""
    fmt = FORMATS["label"]

    def read(image_id: str) -> np.ndarray:
        path = fmt.path(folder, image_id)
        return checked_labels(fmt.read(path), num_classes, path)

    return read


class SegTrain(TrainingStage):
    """A ``seg`` family network trained on a ``label`` artifact (never on the ground truth)."""

    name, config = "seg_train", SegTrainConfig

    def network_name(self, cfg) -> str:
        return cfg.model

    def network_kwargs(self, cfg, data) -> dict:
        return network_kwargs(cfg, data.num_classes + 1)

    def train_module(self, network, cfg) -> TrainModule:
        from wsss.models.seg_train_module import SegTrainModule

        return SegTrainModule(network, loss=cfg.loss)

    def check_inputs(self, cfg, data) -> None:
        ids = data.ids(cfg.split)
        try:
            check_covers(cfg.labels, "label", cfg.split, ids, "--labels")
        except UserError as e:
            hint = " (import a plain PNG folder with `wsss seg import`)" if "no manifest" in str(e) else ""
            raise UserError(f"{e}{hint}") from None
        check_label_files(cfg.labels, data, ids, "--labels")
        if not cfg.allow_ground_truth:
            refuse_ground_truth(cfg.labels, data, ids)

    def input_artifacts(self, cfg) -> dict:
        return {"labels": cfg.labels}

    def dataset(self, cfg, data, transform):
        from wsss.data.torch_datasets import SegmentationDataset

        return SegmentationDataset(data, cfg.split, {"mask": pseudo_label_reader(cfg.labels, data.num_classes)},
                                   transform)


STAGE = SegTrain()
run = STAGE.run
