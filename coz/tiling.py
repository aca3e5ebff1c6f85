"""Tiled processing with Gaussian-weighted blending, for full-image SR (paper Appendix H;
docs/fidelity.md, "OSEDiff-SD3 inference and full-image SR": latent tiles 64 with overlap 16,
Gaussian weights of variance 0.01; tiled VAE with encoder tile 1024 px and decoder tile 128 latents).

A function that maps a (B, C, h, w) tile to a (B, C', h*s, w*s) tile (s: ``scale``, e.g. 1 for
the one-step latent update, 1/8 for a VAE encoder, 8 for a decoder, 4 for Real-ESRGAN on pixels)
is run on overlapping tiles; the outputs are summed with a separable Gaussian window and divided
by the summed weights, so every output pixel is a convex combination of the tiles that cover it.
Peak memory is set by the tile, not the image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction

import torch

from coz.run.progress import Progress, format_seconds

GAUSSIAN_VARIANCE = 0.01


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``size`` with at least ``overlap``; the last
    tile ends at ``size``. One tile when the image fits."""
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    if size <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every tile, row by row (the order of per-tile prompts)."""
    th, tw = min(tile, height), min(tile, width)
    return [
        (y, x, y + th, x + tw)
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
    ]


def gaussian_window(height: int, width: int, variance: float = GAUSSIAN_VARIANCE) -> torch.Tensor:
    """(height, width) separable Gaussian, positions normalised by the side:
    exp(-((i - mid) / side)^2 / (2 variance)) / sqrt(2 pi variance), the tiled-diffusion weights of
    the released full-image script, centred as there: mid = (width - 1) / 2 on x but height / 2 on
    y (half a row lower than centred: for a 64 tile the first row weighs 0.68x, the last 1.46x)."""

    def axis(n: int, mid: float) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        return torch.exp(-(((i - mid) / n) ** 2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)

    return (axis(height, height / 2)[:, None] * axis(width, (width - 1) / 2)[None, :]).float()


def tiled_apply(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    scale: float | Fraction = 1,
    variance: float = GAUSSIAN_VARIANCE,
    label: str | None = None,
) -> torch.Tensor:
    """Run ``fn(tile_tensor, tile_index)`` on overlapping tiles of ``x`` (B, C, H, W) and blend.

    ``tile`` and ``overlap`` are in input units; the output is (B, C', H*scale, W*scale).
    ``tile_index`` follows :func:`tile_boxes` order (e.g. to pick that tile's prompt).
    The output and weight accumulators live where ``fn`` returns its tiles: ``x`` can stay on
    the CPU (even as uint8) while ``fn`` moves each tile to the accelerator and back, so the
    device holds one tile at a time.

    ``label`` names a progress bar over the tiles (with, after the first tile, a line estimating
    the time for all of them); None shows nothing.
    """
    scale = Fraction(scale).limit_denominator(64)
    _, _, height, width = x.shape
    boxes = tile_boxes(height, width, tile, overlap)
    progress = Progress(len(boxes), label or "", "tiles", leave=False, enabled=label is not None)
    out = weight_sum = None
    for index, (top, left, bottom, right) in enumerate(boxes):
        started = time.perf_counter()
        y = fn(x[..., top:bottom, left:right], index)  # (B, C', th*s, tw*s)
        box = [v * scale for v in (top, left, bottom, right)]
        if any(b.denominator != 1 for b in box) or y.shape[-2:] != (box[2] - box[0], box[3] - box[1]):
            raise ValueError(
                f"tile {index} at {(top, left)}: output {tuple(y.shape[-2:])} does not match scale {scale}"
            )
        t, le, b, r = (int(v) for v in box)
        w = gaussian_window(b - t, r - le, variance).to(y.device, y.dtype)  # (th', tw')
        if out is None:
            out = y.new_zeros(*y.shape[:2], int(height * scale), int(width * scale))
            weight_sum = y.new_zeros(int(height * scale), int(width * scale))
        out[..., t:b, le:r] += y * w
        weight_sum[t:b, le:r] += w
        progress.update()
        if index == 0 and len(boxes) > 1:
            took = time.perf_counter() - started
            progress.write(
                f"{progress.desc}: the first of {len(boxes)} tiles took {took:.1f} s: "
                f"about {format_seconds(took * len(boxes))} for all of them"
            )
    progress.close()
    return out.div_(weight_sum)  # in place: no second full-size tensor
