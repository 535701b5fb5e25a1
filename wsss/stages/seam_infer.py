"""``wsss seam infer``: SEAM's multi-scale, flipped CAMs (``infer_SEAM.py --out_cam``), written as a ``cam`` artifact.

Per image (:func:`~wsss.models.seam.seam_image_cams`): scales 0.5, 1, 1.5, 2 (PIL bicubic to ``round(W s) x
round(H s)``), each with its flip; per input the **PCM output** without its background channel, already upsampled
to the scaled input by the network (align_corners=True), then upsampled to the image size (align_corners=False),
masked by the image label and flipped back; the maps are **summed**; then SEAM's per-class min-max normalisation.
The reference leaves a few pixels per class slightly negative (it zeroes the pixels below ``min + 1e-5`` before
subtracting the minimum); our ``cam`` artifact holds values in [0, 1], so they are clipped to 0. Rows are the image
label's classes, as in every ``cam`` artifact (SEAM's ``.npy`` dict holds the same classes).

``--weights`` takes our ``seam train`` checkpoints and the released ``resnet38_SEAM.pth`` (a flat state dict of
232 keys), both loaded strictly; a PSA classifier file is refused with the keys that do not fit. ``--save-png``
writes the argmax with a constant background score, SEAM's ``--out_cam_pred_alpha`` 0.26 by default, as a ``label``
artifact in ``OUT/png``. Memory: the PCM affinity is (hw)^2 at stride 8, about 1 GB at scale 2 of a 500x500 image.
Everything else (ranks, resume, the manifest) is :class:`~wsss.stages.cam_infer.CamInfer`'s.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from wsss.config import runtime
from wsss.engine.inference import Context, InferenceStage
from wsss.models.seam import SEAM_SCALES, seam_fuse, seam_maps
from wsss.stages.cam_infer import CamInfer, CamInferConfig


@dataclasses.dataclass(frozen=True)
class SeamInferConfig(CamInferConfig):
    """SEAM's inference settings: scales 0.5, 1, 1.5, 2 with flips; PNG background 0.26. The network is always
    ``seam`` and the fusion SEAM's, so ``cam infer``'s ``--model`` and ``--fusion`` are no options here."""

    model: Optional[str] = runtime(None)
    fusion: Optional[str] = runtime(None)
    scales: tuple[float, ...] = SEAM_SCALES
    png_threshold: float = 0.26


class SeamInfer(CamInfer):
    """SEAM's multi-scale + flip PCM CAMs of the network ``seam``, as a ``cam`` artifact."""

    name, config, model = "seam_infer", SeamInferConfig, "seam"
    summary = InferenceStage.summary

    def load_network(self, cfg, data):
        """Our ``seam`` checkpoint or SEAM's flat file, strictly, for the dataset's class count."""
        from wsss.models.weights import load_network

        return load_network(cfg.weights, model=self.model, num_classes=data.num_classes, backbone=cfg.backbone)

    def settle(self, cfg, network):
        return cfg

    def predict(self, ctx: Context, image_id: str, loaded: dict):
        """SEAM's fusion (:func:`~wsss.models.seam.seam_fuse`) of the PCM maps of ``load``'s inputs."""
        outputs = [seam_maps(ctx.network, x.to(ctx.device, non_blocking=True)) for x in loaded["inputs"]]
        labels = loaded["labels"]
        return seam_fuse(outputs, labels, tuple(loaded["size"]), ctx.data.num_classes, ctx.cfg.flip), labels


STAGE = SeamInfer()
run = STAGE.run
