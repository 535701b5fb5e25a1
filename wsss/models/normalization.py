"""Input conventions per backbone: channel order, scaling, mean and std.

The references feed their networks differently, and the published weights only work with the right input:

* WideResNet-38, ResNet-50/101 (and our tiny net): RGB, ``(x / 255 - mean) / std`` with the ImageNet statistics
  mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225).
* VGG16 (the DeepLab "20M" Caffe initialisation): **BGR**, 0..255 values with the Caffe mean subtracted,
  (104.008, 116.669, 122.675) for (B, G, R), and no scaling.

These constants live here, with the backbones, and nowhere else; datasets and stages ask
:func:`normalization_for` for the backbone they feed.

Example:
    >>> import numpy as np
    >>> norm = normalization_for("vgg16")
    >>> img = np.zeros((2, 2, 3), np.uint8); img[..., 0] = 200   # pure red
    >>> out = norm.apply(img)                                     # (3, 2, 2), channel 2 is red
    >>> float(out[2, 0, 0]), float(out[0, 0, 0])
    (77.32499694824219, -104.00800323486328)
    >>> int(norm.invert(out)[0, 0, 0])
    200
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wsss.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)


@dataclass(frozen=True)
class Normalization:
    """How a backbone wants its input.

    ``apply`` maps an RGB image with values in 0..255 to ``((x[order] / scale) - mean) / std`` per channel, where
    ``order`` is RGB, or BGR when ``bgr`` is set. ``mean`` and ``std`` are given per *output* channel (so in B, G, R
    order when ``bgr``) and in units of ``x / scale``.

    Attributes:
        mean: per-channel mean, in output channel order.
        std: per-channel standard deviation, in output channel order.
        bgr: whether the network takes BGR (Caffe) channel order.
        scale: the pixel values are divided by this first (255 for the ImageNet statistics, 1 for Caffe).
    """

    mean: tuple
    std: tuple
    bgr: bool = False
    scale: float = 255.0

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Normalization: mean and std need 3 values, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std) or self.scale <= 0:
            raise ValueError(f"Normalization: std and scale must be > 0, got {self.std} and {self.scale}")

    def apply(self, image: Any):
        """Normalise one RGB image.

        Args:
            image: (H, W, 3) RGB, uint8 or float with values in 0..255: a NumPy array (or anything
                ``np.asarray`` takes, e.g. a PIL image) or a torch tensor.

        Returns:
            float32 (3, H, W), of the input's kind (a torch tensor for a tensor, else a NumPy array).
        """
        if _is_tensor(image):
            import torch

            x = image.to(torch.float64)
            _check_hwc(tuple(x.shape))
            if self.bgr:
                x = x.flip(-1)
            x = (x / self.scale - x.new_tensor(self.mean)) / x.new_tensor(self.std)
            return x.permute(2, 0, 1).to(torch.float32).contiguous()
        x = np.asarray(image)
        _check_hwc(x.shape)
        x = x.astype(np.float64)
        if self.bgr:
            x = x[..., ::-1]
        x = (x / self.scale - np.asarray(self.mean)) / np.asarray(self.std)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def invert(self, tensor: Any) -> np.ndarray:
        """Undo :meth:`apply`: back to uint8 RGB for display (values rounded and clipped to 0..255).

        Args:
            tensor: (3, H, W) or (B, 3, H, W) normalised input, torch tensor or NumPy array.

        Returns:
            uint8 (H, W, 3) or (B, H, W, 3) RGB NumPy array.
        """
        x = tensor.detach().cpu().double().numpy() if _is_tensor(tensor) else np.asarray(tensor, np.float64)
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"Normalization.invert: expected (3, H, W) or (B, 3, H, W), got {x.shape}")
        shape = (3, 1, 1)
        x = (x * np.asarray(self.std).reshape(shape) + np.asarray(self.mean).reshape(shape)) * self.scale
        x = np.moveaxis(x, -3, -1)
        if self.bgr:
            x = x[..., ::-1]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


IMAGENET_RGB = Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr=False, scale=255.0)
CAFFE_BGR = Normalization(mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0), bgr=True, scale=1.0)

# backbone name -> input convention. Method networks are looked up by their backbone.
_BY_BACKBONE = {
    "wideresnet38": IMAGENET_RGB,
    "resnet50": IMAGENET_RGB,
    "resnet101": IMAGENET_RGB,
    "tiny": IMAGENET_RGB,
    "vgg16": CAFFE_BGR,
    "resnet101_caffe": CAFFE_BGR,
}


def normalization_for(backbone: str) -> Normalization:
    """The input convention of a backbone (``wideresnet38``, ``vgg16``, ``resnet50``, ``resnet101``, ``tiny``).

    Raises:
        UserError: for an unknown backbone name.
    """
    try:
        return _BY_BACKBONE[backbone]
    except KeyError:
        raise UserError(f"unknown backbone {backbone!r}: expected one of {', '.join(sorted(_BY_BACKBONE))}") from None


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "permute")


def _check_hwc(shape: tuple) -> None:
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"Normalization.apply: expected an (H, W, 3) RGB image, got shape {shape}")
