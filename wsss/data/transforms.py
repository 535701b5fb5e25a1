"""Joint augmentation of an image and its masks: every geometric step moves image and masks together.

Order: (random resize of the long side | random resized crop) -> horizontal flip -> colour jitter (image only) ->
normalise (image only) -> random crop with padding. Images resize bicubic, masks nearest (pixel-centre
"nearest-exact", as PIL does). The padded crop fills
the image with 0 after normalisation (the mean colour; PSA ``train_cls``, SEAM) or, with ``crop_pad="black"``,
with raw black (PSA ``train_aff`` crops before normalising), and the masks with 255 (ignore).
The random resize may also draw one factor of a list (``scale_choices``) or the short side (``short_side_range``);
``interpolation="bilinear"`` resizes images bilinearly without antialiasing (as cv2 ``INTER_LINEAR``), and
``pad_side="bottom_right"`` pastes a side shorter than the crop at 0 (deeplab-pytorch pads bottom and right only).

The presets give the published recipes:

=================  ==========================================================================================
``psa_cls``        long side uniform in [256, 512], flip, jitter (0.3, 0.3, 0.3, 0.1), crop 448 (PSA train_cls)
``seam``           long side uniform in [448, 768], flip, jitter, crop 448 (SEAM train)
``psa_aff``        flip, jitter, crop 448 padded with raw black, no rescaling (PSA/SEAM train_aff)
``single_stage``   RandomResizedCrop(321, area scale 0.9..1.0, aspect 3/4..4/3), flip, jitter (1-stage-wseg)
``deeplab``        one factor of {0.5, 0.75, 1, 1.25, 1.5} (bilinear), flip, crop 321 padded bottom/right
                   (deeplab-pytorch ``voc12.yaml``, the base of retraining on pseudo labels)
=================  ==========================================================================================

Example:
    >>> from wsss.models.normalization import normalization_for
    >>> t = JointTransform(JointTransformConfig.psa_cls(), normalization_for("wideresnet38"))
    >>> image, masks = t(np.zeros((300, 400, 3), np.uint8), {"mask": np.zeros((300, 400), np.uint8)})
    >>> image.shape, masks["mask"].shape, masks["mask"].dtype
    (torch.Size([3, 448, 448]), torch.Size([448, 448]), torch.int64)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from wsss.data.palette import IGNORE_INDEX

JITTER = (0.3, 0.3, 0.3, 0.1)  # brightness, contrast, saturation, hue: the same in every reference recipe
DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)  # deeplab-pytorch voc12.yaml
INTERPOLATIONS = {"bicubic": (InterpolationMode.BICUBIC, True), "bilinear": (InterpolationMode.BILINEAR, False)}


@dataclass(frozen=True)
class JointTransformConfig:
    """What a training stage asks of the joint transform (all steps off by default: normalise only).

    Attributes:
        long_side_range: (min, max) pixels; the long side becomes a uniform random integer in [min, max].
        scale_range: (min, max); both sides are scaled by a factor uniform in [min, max), rounded (IRN's
            ``random_scale``), or None.
        resized_crop: output side of a random resized crop (square), or None.
        resized_crop_scale: area fraction range of that crop.
        resized_crop_ratio: aspect-ratio range of that crop.
        flip: random horizontal flip with probability 1/2.
        jitter: (brightness, contrast, saturation, hue) for a colour jitter in random order, or None.
        crop: side of a random square crop with padding (window when larger, random paste when smaller), or None.
        crop_pad: "zero" (0 after normalisation) or "black" (raw black, normalised) for the image padding.
        scale_choices: factors, one drawn uniformly; the image becomes (int(H s), int(W s)) (deeplab-pytorch).
        short_side_range: (min, max) pixels; the short side becomes a uniform random integer in [min, max].
        interpolation: "bicubic" (antialiased) or "bilinear" (not antialiased) for the random resizes.
        pad_side: where a side shorter than the crop is padded: "random" (random paste) or "bottom_right".
    """

    long_side_range: Optional[tuple] = None
    scale_range: Optional[tuple] = None
    resized_crop: Optional[int] = None
    resized_crop_scale: tuple = (0.9, 1.0)
    resized_crop_ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = False
    jitter: Optional[tuple] = None
    crop: Optional[int] = None
    crop_pad: str = "zero"
    scale_choices: Optional[tuple] = None
    short_side_range: Optional[tuple] = None
    interpolation: str = "bicubic"
    pad_side: str = "random"

    def __post_init__(self) -> None:
        self._check_more_resizes()
        if self.long_side_range is not None:
            lo, hi = self.long_side_range
            if not 1 <= lo <= hi:
                raise ValueError(f"long_side_range must be 1 <= min <= max, got {self.long_side_range}")
        if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be 0 < min <= max, got {self.scale_range}")
        for name in ("resized_crop", "crop"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.crop_pad not in ("zero", "black"):
            raise ValueError(f"crop_pad must be 'zero' or 'black', got {self.crop_pad!r}")
        if self.jitter is not None and len(self.jitter) != 4:
            raise ValueError(f"jitter needs (brightness, contrast, saturation, hue), got {self.jitter}")
        if self.jitter is not None and min(self.jitter) < 0:
            raise ValueError(f"jitter values must be >= 0, got {self.jitter}")

    def _check_more_resizes(self) -> None:
        if self.scale_choices is not None and (not self.scale_choices or min(self.scale_choices) <= 0):
            raise ValueError(f"scale_choices must be factors > 0, got {self.scale_choices}")
        if self.short_side_range is not None and not 1 <= self.short_side_range[0] <= self.short_side_range[1]:
            raise ValueError(f"short_side_range must be 1 <= min <= max, got {self.short_side_range}")
        given = [n for n in ("long_side_range", "scale_range", "resized_crop", "scale_choices", "short_side_range")
                 if getattr(self, n, None) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are alternative resizes; give one")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.pad_side not in ("random", "bottom_right"):
            raise ValueError(f"pad_side must be 'random' or 'bottom_right', got {self.pad_side!r}")

    @classmethod
    def psa_cls(cls, crop: int = 448) -> "JointTransformConfig":
        return cls(long_side_range=(256, 512), flip=True, jitter=JITTER, crop=crop)

    @classmethod
    def seam(cls, crop: int = 448) -> "JointTransformConfig":
        return cls(long_side_range=(448, 768), flip=True, jitter=JITTER, crop=crop)

    @classmethod
    def psa_aff(cls, crop: int = 448) -> "JointTransformConfig":
        return cls(flip=True, jitter=JITTER, crop=crop, crop_pad="black")

    @classmethod
    def single_stage(cls, crop: int = 321, scale: tuple = (0.9, 1.0)) -> "JointTransformConfig":
        return cls(resized_crop=crop, resized_crop_scale=tuple(scale), flip=True, jitter=JITTER)

    @classmethod
    def deeplab(cls, crop: int = 321, scales: tuple = DEEPLAB_SCALES) -> "JointTransformConfig":
        return cls(scale_choices=tuple(scales), interpolation="bilinear", flip=True, crop=crop,
                   pad_side="bottom_right")


class JointTransform:
    """Apply a :class:`JointTransformConfig` to an image and any number of masks (torch RNG, so DataLoader
    workers get their own random streams).

    Args:
        config: the steps to apply.
        normalization: anything with ``apply(HWC 0..255) -> (3, H, W)`` (``wsss.models.normalization``); None
            keeps the values in 0..255.
    """

    def __init__(self, config: JointTransformConfig = JointTransformConfig(), normalization: Any = None):
        self.config = config
        self.normalization = normalization
        c = config
        self.jitter = v2.ColorJitter(*c.jitter) if c.jitter is not None else None
        pad = torch.zeros(3)
        if c.crop_pad == "black" and normalization is not None:
            pad = torch.as_tensor(normalization.apply(np.zeros((1, 1, 3), np.float32)), dtype=torch.float32)[:, 0, 0]
        self.image_pad = pad

    def __repr__(self) -> str:
        return f"JointTransform({self.config}, normalization={self.normalization})"

    def __call__(self, image: np.ndarray, masks: Optional[Mapping[str, np.ndarray]] = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Transform one sample.

        Args:
            image: uint8 (H, W, 3) RGB.
            masks: name -> uint8 (H, W) label map (255 = ignore), each the size of the image.

        Returns:
            image float32 (3, h, w) (normalised if a normalisation was given) and masks int64 (h, w).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"JointTransform: expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        ms = {}
        for name, m in (masks or {}).items():
            m = np.asarray(m)
            if m.shape != image.shape[:2]:
                raise ValueError(f"JointTransform: mask {name!r} is {m.shape}, the image is {image.shape[:2]}")
            ms[name] = torch.from_numpy(np.ascontiguousarray(m)).to(torch.uint8)[None]
        img, ms = self._resize(img, ms)
        if self.config.flip and torch.rand(()) < 0.5:
            img, ms = img.flip(-1), {k: m.flip(-1) for k, m in ms.items()}
        if self.jitter is not None:
            img = self.jitter(img)
        out = self._normalise(img)
        ms64 = {k: m[0].to(torch.int64) for k, m in ms.items()}
        if self.config.crop is not None:
            out, ms64 = self._pad_crop(out, ms64, self.config.crop)
        return out, ms64

    def _resize(self, img: torch.Tensor, ms: dict) -> tuple[torch.Tensor, dict]:
        c = self.config
        size = self._drawn_size(*img.shape[-2:])
        if size is not None:
            mode, antialias = INTERPOLATIONS[c.interpolation]
            img = F.resize(img, size, interpolation=mode, antialias=antialias)
            ms = {k: F.resize(m, size, interpolation=InterpolationMode.NEAREST_EXACT) for k, m in ms.items()}
        elif c.resized_crop is not None:
            top, left, ch, cw = RandomResizedCrop.get_params(img, list(c.resized_crop_scale),
                                                             list(c.resized_crop_ratio))
            size = [c.resized_crop, c.resized_crop]
            img = F.resized_crop(img, top, left, ch, cw, size, interpolation=InterpolationMode.BICUBIC,
                                 antialias=True)
            ms = {k: F.resized_crop(m, top, left, ch, cw, size, interpolation=InterpolationMode.NEAREST_EXACT)
                  for k, m in ms.items()}
        return img, ms

    def _drawn_size(self, h: int, w: int) -> Optional[list]:
        """(h, w) after the random resize (long side, scale range, scale choice or short side), or None."""
        c = self.config
        if c.long_side_range is not None:
            target = int(torch.randint(c.long_side_range[0], c.long_side_range[1] + 1, ()))
            return [target, round(w * target / h)] if w < h else [round(h * target / w), target]
        if c.scale_range is not None:
            factor = c.scale_range[0] + (c.scale_range[1] - c.scale_range[0]) * float(torch.rand(()))
            return [max(1, round(h * factor)), max(1, round(w * factor))]
        if c.scale_choices is not None:
            s = c.scale_choices[int(torch.randint(len(c.scale_choices), ()))]
            return [max(1, int(h * s)), max(1, int(w * s))]
        if c.short_side_range is not None:
            target = int(torch.randint(int(c.short_side_range[0]), int(c.short_side_range[1]) + 1, ()))
            return [target, round(w * target / h)] if h <= w else [round(h * target / w), target]
        return None

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        if self.normalization is None:
            return img.to(torch.float32)
        out = self.normalization.apply(img.permute(1, 2, 0))
        return torch.as_tensor(out, dtype=torch.float32)

    def _pad_crop(self, img: torch.Tensor, ms: dict, size: int) -> tuple[torch.Tensor, dict]:
        """A size x size window: a random part of a longer side, a random paste position for a shorter one."""
        h, w = img.shape[-2:]
        at_0 = self.config.pad_side == "bottom_right"
        (src_y, dst_y, n_y), (src_x, dst_x, n_x) = _crop_offsets(h, size, at_0), _crop_offsets(w, size, at_0)
        out = self.image_pad.view(3, 1, 1).expand(3, size, size).clone()
        out[:, dst_y:dst_y + n_y, dst_x:dst_x + n_x] = img[:, src_y:src_y + n_y, src_x:src_x + n_x]
        cropped = {}
        for k, m in ms.items():
            c = torch.full((size, size), IGNORE_INDEX, dtype=torch.int64)
            c[dst_y:dst_y + n_y, dst_x:dst_x + n_x] = m[src_y:src_y + n_y, src_x:src_x + n_x]
            cropped[k] = c
        return out, cropped


def _crop_offsets(length: int, size: int, at_0: bool = False) -> tuple[int, int, int]:
    """(source start, destination start, count) along one axis of a padded random crop; with ``at_0`` a shorter
    side is pasted at 0 (padded after it only)."""
    space = length - size
    if space > 0:
        return int(torch.randint(0, space + 1, ())), 0, size
    return 0, 0 if at_0 else int(torch.randint(0, -space + 1, ())), length
