"""SEAM's maths (Wang et al., CVPR 2020, ``train_SEAM.py`` / ``resnet38_SEAM.py``) as plain tensor functions.

Conventions: CAM tensors are (B, C + 1, H, W) with channel 0 the (nominal) background and channels 1..C the
foreground classes; label tensors are (B, C + 1, 1, 1) or broadcastable, with the background entry 1.

* the Pixel Correlation Module: :func:`pcm_seed` (the detached, one-hot seed), :func:`pcm_affinity` and
  :func:`pcm_refine` (similarity-weighted average of the seed over all pixels);
* the losses: :func:`max_norm` (SEAM's min-max normalisation before the losses), :func:`er_loss`,
  :func:`with_background` (the background rule), :func:`one_hot_max` and :func:`ecr_loss` (detached one-hot target,
  top-20 % mining), :func:`rvmin_loss` (the adaptive min-pooling term of the code, not in the paper);
* inference: :func:`seam_normalize_cams` (SEAM's per-class min-max of the summed multi-scale maps).

Example:
    >>> cams = torch.rand(2, 21, 4, 4)
    >>> seed = pcm_seed(cams)                       # (2, 21, 4, 4), one foreground class per pixel
    >>> refined = pcm_refine(seed, torch.randn(2, 192, 4, 4))
    >>> refined.shape
    torch.Size([2, 21, 4, 4])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5
ECR_TOP_RATIO = 0.2  # ECR averages the largest 20 % of each sample's errors
RVMIN_RATIO = 4  # rvmin averages the HW // 4 smallest per-pixel maxima


def _check_cams(cams: torch.Tensor, name: str = "cams") -> None:
    if cams.dim() != 4 or cams.shape[1] < 2:
        raise ValueError(f"{name} must be (B, C + 1, H, W) with a background channel and >= 1 class, "
                         f"got {tuple(cams.shape)}")


def _foreground_max(cams: torch.Tensor) -> torch.Tensor:
    """(B, C + 1, H, W) -> (B, 1, H, W): per-pixel maximum over the foreground channels 1..C."""
    return cams[:, 1:].amax(dim=1, keepdim=True)


@torch.no_grad()
def pcm_seed(cams: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The PCM seed of raw CAMs (computed without gradient; ``resnet38_SEAM.py:34-40``).

    Per sample and channel ``s_c = ReLU(ReLU(y_c) - eps) / (max ReLU(y_c) + eps)``; background
    ``s_0 = 1 - max_{c >= 1} s_c``; every foreground value below the per-pixel foreground maximum is set to 0 (ties
    all survive). No image-label masking, as the reference.

    Args:
        cams: (B, C + 1, h, w) raw head output (any values).

    Returns:
        (B, C + 1, h, w) detached seed in [0, 1].
    """
    _check_cams(cams)
    a = F.relu(cams.detach())
    peak = a.flatten(2).amax(dim=2)[:, :, None, None] + eps
    seed = F.relu(a - eps) / peak
    fg = seed[:, 1:]
    fg_max = fg.amax(dim=1, keepdim=True)
    return torch.cat([1 - fg_max, torch.where(fg < fg_max, torch.zeros_like(fg), fg)], dim=1)


def pcm_affinity(features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """PCM affinities: ``A = ReLU(g^T g)`` of L2-normalised pixel vectors, each column divided by its sum.

    Args:
        features: (B, D, h, w) projected features (``f9`` output); pixel vectors ``g_i / (||g_i|| + eps)``.

    Returns:
        (B, hw, hw) non-negative, ``out[b, i, j] = A_ij / (sum_i A_ij + eps)`` (columns sum to ~1).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, D, h, w), got {tuple(features.shape)}")
    g = features.flatten(2)
    g = g / (g.norm(dim=1, keepdim=True) + eps)
    aff = F.relu(torch.bmm(g.transpose(1, 2), g))
    return aff / (aff.sum(dim=1, keepdim=True) + eps)


def pcm_refine(seed: torch.Tensor, features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The Pixel Correlation Module: ``y_c(j) = sum_i seed_c(i) * Ahat_ij`` (``resnet38_SEAM.py:52-63``).

    Args:
        seed: (B, K, h, w), e.g. from :func:`pcm_seed`; resized to the feature size (bilinear, align_corners=True)
            if it differs.
        features: (B, D, h, w) projected features (see :func:`pcm_affinity`).

    Returns:
        (B, K, h, w): every pixel a similarity-weighted average of the seed over all pixels.
    """
    b, _, h, w = features.shape
    if seed.dim() != 4 or seed.shape[0] != b:
        raise ValueError(f"seed must be (B={b}, K, h, w), got {tuple(seed.shape)}")
    if seed.shape[-2:] != (h, w):
        seed = F.interpolate(seed, (h, w), mode="bilinear", align_corners=True)
    refined = torch.bmm(seed.flatten(2), pcm_affinity(features, eps))
    return refined.view(b, -1, h, w)


def max_norm(cams: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """SEAM's ``max_norm`` (torch branch): per sample and channel, ``p = ReLU(p)`` then
    ``ReLU(p - min - eps) / (max - min + eps)`` over the spatial extent; differentiable through max and min.

    Args:
        cams: (B, K, H, W).

    Returns:
        (B, K, H, W) in [0, 1).
    """
    if cams.dim() != 4:
        raise ValueError(f"cams must be (B, K, H, W), got {tuple(cams.shape)}")
    p = F.relu(cams)
    flat = p.flatten(2)
    lo = flat.amin(dim=2)[:, :, None, None]
    hi = flat.amax(dim=2)[:, :, None, None]
    return F.relu(p - lo - eps) / (hi - lo + eps)


def er_loss(cams_a: torch.Tensor, cams_b: torch.Tensor) -> torch.Tensor:
    """Equivariant regularisation: ``mean |a[:, 1:] - b[:, 1:]|`` (L1 over foreground, neither side detached).

    Args:
        cams_a, cams_b: (B, C + 1, h, w) normalised, label-masked CAMs of the two views at the same size.
    """
    _check_cams(cams_a, "cams_a")
    if cams_a.shape != cams_b.shape:
        raise ValueError(f"ER needs two maps of one shape, got {tuple(cams_a.shape)} and {tuple(cams_b.shape)}")
    return (cams_a[:, 1:] - cams_b[:, 1:]).abs().mean()


def with_background(cams: torch.Tensor) -> torch.Tensor:
    """The background rule: channel 0 replaced by ``1 - max_{c >= 1} cams_c``. (B, C + 1, h, w) -> same shape."""
    _check_cams(cams)
    return torch.cat([1 - _foreground_max(cams), cams[:, 1:]], dim=1)


def one_hot_max(cams: torch.Tensor) -> torch.Tensor:
    """SEAM's ``max_onehot`` of a **detached** copy: background kept, each foreground value below the per-pixel
    foreground maximum set to 0. (B, C + 1, h, w) -> same shape, no gradient. Unlike the reference, the input's
    storage is not modified (the reference's in-place edit only changes its TensorBoard pictures)."""
    _check_cams(cams)
    x = cams.detach()
    fg = x[:, 1:]
    return torch.cat([x[:, :1], torch.where(fg < _foreground_max(x), torch.zeros_like(fg), fg)], dim=1)


def ecr_loss(target_cams: torch.Tensor, pcm_cams: torch.Tensor, top_ratio: float = ECR_TOP_RATIO) -> torch.Tensor:
    """One direction of equivariant cross regularisation: mean of the top ``top_ratio`` of
    ``|one_hot_max(target) - pcm|`` per sample (``k = int(K * h * w * top_ratio)``; 75,415 for 21 x 134 x 134).

    Args:
        target_cams: (B, K, h, w) the other view's normalised CAMs with the background rule applied (detached here).
        pcm_cams: (B, K, h, w) this view's normalised, label-masked PCM output.

    Returns:
        Scalar: the mean over samples of their top-k mean error.
    """
    if target_cams.shape != pcm_cams.shape:
        raise ValueError(f"ECR needs two maps of one shape, got {tuple(target_cams.shape)} and "
                         f"{tuple(pcm_cams.shape)}")
    if not 0 < top_ratio <= 1:
        raise ValueError(f"top_ratio must be in (0, 1], got {top_ratio}")
    b, c, h, w = pcm_cams.shape
    k = int(c * h * w * top_ratio)
    if k < 1:
        raise ValueError(f"ECR: top {top_ratio} of {c}x{h}x{w} values selects nothing")
    error = (one_hot_max(target_cams) - pcm_cams).abs().reshape(b, -1)
    return error.topk(k, dim=-1).values.mean()


def rvmin_loss(cams: torch.Tensor) -> torch.Tensor:
    """Adaptive min-pooling ("rvmin", in SEAM's code only): per pixel the maximum over classes; the ``HW // 4``
    smallest per sample; ReLU; ``sum / (k * B)``.

    Args:
        cams: (B, C, H, W) the label-masked raw PCM output, **foreground channels only**.

    Returns:
        Scalar >= 0.
    """
    if cams.dim() != 4:
        raise ValueError(f"cams must be (B, C, H, W), got {tuple(cams.shape)}")
    b, _, h, w = cams.shape
    k = h * w // RVMIN_RATIO
    if k < 1:
        raise ValueError(f"rvmin: a {h}x{w} map has no quarter of its pixels to pool")
    smallest = cams.amax(dim=1).reshape(b, -1).topk(k, dim=-1, largest=False).values
    return F.relu(smallest).sum() / (k * b)


def seam_normalize_cams(cams: torch.Tensor, clip: bool = True, eps: float = EPS) -> torch.Tensor:
    """SEAM's normalisation of the summed multi-scale maps (``infer_SEAM.py:72-77``).

    Negatives set to 0; per class ``min``/``max``; values below ``min + eps`` set to 0 **before** subtracting the
    minimum (the reference's order, which leaves those pixels at ``-(min + eps) / (max - min + eps)``); then
    ``(S - min - eps) / (max - min + eps)``. An all-zero class gives -1 everywhere. With ``clip`` (our ``cam``
    artifact convention) the result is clipped to [0, 1], which removes exactly those negative values.

    Args:
        cams: (K, H, W) summed class maps.
        clip: clip to [0, 1]; False returns the reference's values.

    Returns:
        (K, H, W) float32.
    """
    if cams.dim() != 3:
        raise ValueError(f"cams must be (K, H, W), got {tuple(cams.shape)}")
    s = cams.float().clamp_min(0)
    flat = s.flatten(1)
    lo = flat.amin(dim=1)[:, None, None]
    hi = flat.amax(dim=1)[:, None, None]
    s = torch.where(s < lo + eps, torch.zeros_like(s), s)
    out = (s - lo - eps) / (hi - lo + eps)
    return out.clamp(0, 1) if clip else out
