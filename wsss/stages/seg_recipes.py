"""The published stage-2 recipes (``retrain.md`` §8.4) as named presets of ``wsss seg train`` and ``wsss seg infer``.

``--recipe NAME`` layers the preset's values over the stage's defaults and under ``--config`` and the flags. The
defaults of both stages are the ``dlp-coco`` recipe. Init weights are never part of a preset: give the file the
recipe names with ``--init-weights``.

==========  ==============================================  ====================================================
recipe      training                                        inference
==========  ==============================================  ====================================================
``dlp-coco``  deeplabv2_resnet101 (BN frozen), init             original size, MSC max inside the network; CRF
            ``deeplabv1_resnet101-coco.pth``; 5 x 2            1/3 + 67/3/4, 10 iterations, on deeplab-pytorch's
            accumulation, 20k updates, SGD 0.9, lr 2.5e-4,    wrapped mean-subtracted image
            wd 5e-4, poly 0.9 recomputed every 10 updates;
            scale one of {0.5..1.5}, flip, crop 321 padded
            bottom/right; CE on the 4 MSC outputs
``irn``     as dlp-coco, ImageNet init                       as dlp-coco
            ``deeplabv1_resnet101-imagenet.pth``, 30k updates,
            scales {0.5, 0.75, ..., 2.0}, balanced CE
``clip-es`` as dlp-coco, lr 2e-4 (ImageNet init; COCO:     as dlp-coco
            ``--lr 2.5e-5``), balanced CE
``seam``    deeplabv1_resnet38 (sscb head, BN "as          scales 0.5..1.75 (bicubic) + flip, mean of the
            reference"), batch 10, 20k updates, lr 1e-3,     logits upsampled with align_corners True; CRF
            groups 1/2/10/20, scale U[0.5, 1.5] (bicubic),   3/3 + 32/13/10, 1 iteration, on the RGB image
            flip, crop 448 (random paste), CE at full size
``psa``     not published: ``seam``'s numbers on            original size; DeepLab-LargeFOV's CRF 3/3 +
            deeplabv1_resnet38 with the PSA-lineage head      121/5/4, 10 iterations, RGB image
            (frozen BN)
``tv``      deeplabv3_resnet101, batch 8, 30 epochs,         short side 520, no CRF
            lr 0.01, wd 1e-4, short side U[260, 1040],
            flip, crop 480 padded black, CE + 0.5 aux
==========  ==============================================  ====================================================

Every preset's departures from its reference are in its ``departures`` (and the README).
"""
from __future__ import annotations

from wsss.config import Preset

# Dense-CRF parameters: Gaussian sxy, compat, bilateral sxy, srgb, compat, mean-field iterations.
DLP_CRF = (1.0, 3.0, 67.0, 3.0, 4.0, 10.0)          # deeplab-pytorch voc12.yaml
SEAM_CRF = (3.0, 3.0, 32.0, 13.0, 10.0, 1.0)        # sscb seamv1-pseudovoc
LARGEFOV_CRF = (3.0, 3.0, 121.0, 5.0, 4.0, 10.0)    # DeepLab-CRF-LargeFOV, as quoted in psa#10
SEAM_TEST_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
IRN_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

_LOADER = ("the data order is reshuffled every epoch and the last partial batch dropped (the reference restarts "
           "its loader on exhaustion, without drop_last)")
_DLP = ("images are resized with torch's bilinear (no antialiasing), not cv2 INTER_LINEAR: values differ by "
        "rounding", _LOADER, "seeds are set (the reference sets none and enables cudnn.benchmark)")
_SEAM_TRAIN = {
    "model": "deeplabv1_resnet38", "head": "sscb", "batch_size": 10, "accum_steps": 1, "max_iters": 20000,
    "lr": 1e-3, "poly_every": 1, "scale_choices": None, "scale_range": (0.5, 1.5), "interpolation": "bicubic",
    "crop": 448, "pad_side": "random",
}
_SEAM = ("SEAM's HSV jitter (integer deltas within +-10 on H, S, V) is not reproduced: no colour jitter",
         "poly denominator max_iters, where sscb divides by max_iters + 1 (at most one step's difference)",
         "bicubic resize antialiased (PIL-like), where sscb uses cv2 bicubic")

TRAIN_PRESETS = {
    "dlp-coco": Preset({}, "deeplab-pytorch DeepLab-v2 (the defaults; give the COCO init)", _DLP),
    "irn": Preset({"max_iters": 30000, "scale_choices": IRN_SCALES, "loss": "balanced_ce"},
                  "AdvCAM/ReCAM 'IRN-style': 30k updates, 7 scales, balanced CE (give the ImageNet init)",
                  _DLP + ("batch 5 x 2 is deeplab-pytorch's; the papers' 'batch size 10' may be 10 x 2 (open)",)),
    "clip-es": Preset({"lr": 2e-4, "loss": "balanced_ce"},
                      "CLIP-ES: lr 2e-4 and balanced CE (ImageNet init; COCO init: --lr 2.5e-5)", _DLP),
    "seam": Preset(_SEAM_TRAIN, "SEAM's retrain (sscb seamv1): DeepLab-v1 ResNet-38, crop 448, lr 1e-3", _SEAM),
    "psa": Preset({**_SEAM_TRAIN, "head": "psa"},
                  "PSA lineage: DeepLab-v1 ResNet-38 with the psa head; unpublished, so seam's numbers",
                  ("PSA published no retraining recipe: seam's training numbers are used",) + _SEAM),
    "tv": Preset({"model": "deeplabv3_resnet101", "batch_size": 8, "accum_steps": 1, "max_iters": None,
                  "epochs": 30, "lr": 0.01, "weight_decay": 1e-4, "poly_every": 1, "scale_choices": None,
                  "short_side_range": (260, 1040), "crop": 480, "crop_pad": "black"},
                 "torchvision reference: DeepLabV3 ResNet-101, 30 epochs, lr 0.01, crop 480",
                 ("batch 8 is the global batch (the reference: 8 per GPU)",
                  "bilinear resize not antialiased (the reference resizes PIL images, which antialiases)",
                  "the padding of a side shorter than 480 goes after the image (bottom/right)")),
}

_SEAM_INFER = {"scales": SEAM_TEST_SCALES, "flip": True, "fuse": "mean", "align_corners": True,
               "crf_params": SEAM_CRF, "crf_image": "rgb"}
INFER_PRESETS = {
    "dlp-coco": Preset({}, "original size, MSC max, CRF 1/3+67/3/4 x10 on the wrapped image (the defaults)"),
    "irn": Preset({}, "as dlp-coco (IRN's own val number used MS + flip: add --scales and --flip)"),
    "clip-es": Preset({}, "as dlp-coco"),
    "seam": Preset(_SEAM_INFER, "6 scales + flip, mean of logits, CRF 3/3+32/13/10 x1 on RGB",
                   ("scaled inputs are resized with PIL bicubic (sscb: cv2 bicubic)",)),
    "psa": Preset({"crf_params": LARGEFOV_CRF, "crf_image": "rgb"}, "original size, LargeFOV CRF 3/3+121/5/4 x10",
                  ("the LargeFOV CRF values come from a third-party quote (psa#10), not a stored file",)),
    "tv": Preset({"short_side": 520, "crf_image": "rgb"}, "short side 520, one scale, no CRF",
                 ("the short side is resized with PIL bicubic (torchvision: bilinear)",)),
}
