"""Batched JPEG compression in PyTorch, one quality per image (BasicSR's ``DiffJPEG``, non-differentiable).

Baseline JPEG with 4:2:0 chroma subsampling: RGB -> YCbCr (JFIF), 2x2 average-pooled chroma,
8x8 orthonormal DCT of each block (minus 128), quantisation by the standard tables scaled by the
quality factor (``5000 / q`` below 50, ``200 - 2q`` above, as libjpeg and BasicSR), rounding, and
back. Runs on the training device over the whole batch; no entropy coding (it is lossless).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# JPEG Annex K luminance and chrominance tables (row-major: [v][u]).
_Y_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_C_TOP = ((17, 18, 24, 47), (18, 21, 26, 66), (24, 26, 56, 99), (47, 66, 99, 99))


def _tables(device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor(_Y_TABLE, dtype=dtype, device=device)
    c = torch.full((8, 8), 99.0, dtype=dtype, device=device)
    c[:4, :4] = torch.tensor(_C_TOP, dtype=dtype, device=device)
    return y, c


def _dct_matrix(device, dtype) -> torch.Tensor:
    """D (8, 8) with D[u, x] = c(u) cos((2x + 1) u pi / 16): block -> D @ block @ D^T."""
    x = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * x[None, :] + 1) * x[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=dtype)


def quality_factor(quality: torch.Tensor) -> torch.Tensor:
    """libjpeg's table scale for quality 1..100 (per image)."""
    q = quality.clamp(1, 100)
    return torch.where(q < 50, 5000.0 / q, 200.0 - 2 * q) / 100.0


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = x.shape
    return x.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(x: torch.Tensor) -> torch.Tensor:
    b, nh, nw = x.shape[:3]
    return x.permute(0, 1, 3, 2, 4).reshape(b, nh * 8, nw * 8)


def _compress_channel(x: torch.Tensor, table: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(B, H, W) in 0..255 (H, W multiples of 8) -> the same after DCT quantisation."""
    d = _dct_matrix(x.device, x.dtype)
    blocks = _blocks(x - 128.0)
    coeffs = d @ blocks @ d.T  # (B, h, w, 8, 8)
    step = table * factor.view(-1, 1, 1, 1, 1)
    coeffs = torch.round(coeffs / step) * step
    return _unblocks(d.T @ coeffs @ d) + 128.0


def jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], quality (B,) in 1..100 -> JPEG-compressed (B, 3, H, W) in [0, 1]."""
    b, _, h, w = images.shape
    x = images.float().clamp(0, 1) * 255.0
    pad_h, pad_w = (16 - h % 16) % 16, (16 - w % 16) % 16
    if pad_h or pad_w:  # BasicSR pads with reflection to whole 16x16 macro-blocks
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > 16 else "replicate")
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0
    factor = quality_factor(quality.to(x.device, x.dtype))
    y_table, c_table = _tables(x.device, x.dtype)
    y = _compress_channel(y, y_table, factor)
    chroma = F.avg_pool2d(torch.stack((cb, cr), 1), 2)  # (B, 2, H/2, W/2)
    cb, cr = (_compress_channel(c, c_table, factor) for c in chroma.unbind(1))
    chroma = torch.stack((cb, cr), 1).repeat_interleave(2, -2).repeat_interleave(2, -1) - 128.0
    cb, cr = chroma.unbind(1)
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    bl = y + 1.772 * cb
    out = torch.stack((r, g, bl), 1)[..., :h, :w].clamp(0, 255) / 255.0
    return out.to(images.dtype)
