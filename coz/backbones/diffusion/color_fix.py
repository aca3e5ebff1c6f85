"""Colour correction of a diffusion SR output towards its input (StableSR's post-processing).

One-step diffusion SR can drift in colour. The authors' scripts offer two fixes, applied to the
restored image with the bicubic-upsampled input as the colour reference
(docs/fidelity.md "Other backbones": OSEDiff-SD2.1 defaults to AdaIN, S3Diff to wavelet; the
CoZ SD3 script defaults to none):

- ``adain``: per-image, per-channel mean and standard deviation of the output are replaced by
  those of the reference.
- ``wavelet``: the output's high frequencies plus the reference's low frequencies, split by a
  5-level a-trous wavelet (3x3 binomial kernel dilated 1, 2, 4, 8, 16; replicate padding).

Both work on (B, 3, H, W) tensors in [0, 1] and return a clamped result of the same shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIXES = ("none", "adain", "wavelet")


def adain_color_fix(target: torch.Tensor, source: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``target`` the per-channel mean/std of ``source``; both (B, C, H, W)."""
    t_mean, t_std = _mean_std(target, eps)  # (B, C, 1, 1)
    s_mean, s_std = _mean_std(source, eps)
    return ((target - t_mean) / t_std * s_std + s_mean).clamp(0.0, 1.0)


def _mean_std(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)  # (B, C, H*W)
    return flat.mean(-1)[..., None, None], (flat.var(-1) + eps).sqrt()[..., None, None]


def wavelet_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """One a-trous level: the 3x3 binomial kernel with dilation ``radius``, replicate padding."""
    k = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=x.dtype, device=x.device) / 16
    channels = x.shape[1]
    kernel = k.expand(channels, 1, 3, 3)  # depthwise
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(x, kernel, groups=channels, dilation=radius)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) with high + low == x; low is the blur after ``levels`` dilations 1, 2, ..."""
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = wavelet_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(target: torch.Tensor, source: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of ``target`` + low frequencies of ``source``; both (B, C, H, W)."""
    high, _ = wavelet_decompose(target, levels)
    _, low = wavelet_decompose(source, levels)
    return (high + low).clamp(0.0, 1.0)


def color_fix(kind: str, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Apply the colour fix named ``kind`` (``none`` | ``adain`` | ``wavelet``), in float32."""
    if kind == "none":
        return target
    if kind not in COLOR_FIXES:
        raise ValueError(f"color_fix={kind!r}: use one of {', '.join(COLOR_FIXES)}")
    if target.shape != source.shape:
        raise ValueError(f"color fix needs equal shapes, got {tuple(target.shape)} and {tuple(source.shape)}")
    fix = adain_color_fix if kind == "adain" else wavelet_color_fix
    return fix(target.float(), source.float()).to(target.dtype)
