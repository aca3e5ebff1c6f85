"""Tiled VAE as the authors' later full-image script runs it (multidiffusion's "VAEHook";
docs/fidelity.md, "OSEDiff-SD3 inference and full-image SR").

A VAE's GroupNorms normalise with the statistics of the WHOLE feature map. Encoding or decoding
tiles independently gives each tile its own statistics, so neighbouring tiles differ in brightness
and contrast; blending only hides the seams. Here the encoder (or decoder) is unrolled into a flat
list of steps and every GroupNorm uses statistics shared by all tiles, taken one of two ways:

- ``fast`` (the released script's setting, VAEHook's fast mode for encoder and decoder): the input
  is shrunk to the tile size (nearest-exact, each channel's mean and std restored, clamped to the
  input's range), run once through the steps, and each GroupNorm's per-group mean and variance on
  that copy are fixed for every tile; the tiles then run one after another.
- ``shared_norm`` (exact; no released counterpart): every tile goes through the list in lockstep,
  and at each GroupNorm the statistics are gathered over the cores of ALL tiles first.

Each tile carries ``pad`` of real context on every side (cut off at the end), so convolutions see
their neighbours; the cores are pasted side by side, not blended. The split is VAEHook's (see
:func:`core_boxes`), and an input no larger than ``tile + 2 pad`` is not tiled at all (the plain
encoder or decoder). Attention (the mid block's one layer) stays local to its padded tile, as in
the released technique.

The tiles live where the input lives (the host for a large image); each step moves one tile at a
time to ``device``. Works with diffusers' ``Encoder`` / ``Decoder`` of ``AutoencoderKL`` (SD, SD3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Box = tuple[int, int, int, int]  # (top, left, bottom, right)
STATISTICS = ("fast", "shared_norm")


@dataclass
class _Tile:
    x: torch.Tensor  # (1, C, h, w) the tile's current activation
    padded: Box  # in input units
    core: Box  # in input units
    residual: list[torch.Tensor] = field(default_factory=list)


def _rounded_tile(size: int, tile: int) -> int:
    """VAEHook's tile side for a wanted ``size`` <= ``tile``: ``size`` rounded up to the largest of
    32, 16, 8, 4, 2 whose multiple still fits in ``tile`` (``size`` itself when none does)."""
    for step in (32, 16, 8, 4, 2):
        if size % step == 0:
            return size
        if -(-size // step) * step <= tile:
            return -(-size // step) * step
    return size


def needs_tiles(height: int, width: int, tile: int, pad: int) -> bool:
    """VAEHook tiles only an input whose longer side exceeds ``tile + 2 pad`` (1088 px for the
    encoder's 1024 + 2 x 32, 150 latents for the decoder's 128 + 2 x 11)."""
    return max(height, width) > tile + 2 * pad


def core_boxes(height: int, width: int, tile: int, pad: int) -> list[Box]:
    """Non-overlapping cores covering the image, split as VAEHook splits: n = ceil((side - 2 pad) /
    tile) tiles per side, each ``_rounded_tile(ceil((side - 2 pad) / n))`` long from ``pad`` on; the
    first core reaches back to 0 and the last to the side (256 latents, tile 128, pad 11: 0-139 and
    139-256). Cores a rounded-up split would leave empty are dropped."""

    def cuts(size: int) -> list[int]:
        inner = size - 2 * pad
        n = max(1, math.ceil(inner / tile))
        step = _rounded_tile(math.ceil(inner / n), tile)
        inner_cuts = [min(pad + i * step, size) for i in range(1, n)]
        return sorted({0, size, *inner_cuts})

    ys, xs = cuts(height), cuts(width)
    return [(ys[i], xs[j], ys[i + 1], xs[j + 1]) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]


def shrunk_copy(x: torch.Tensor, tile: int) -> torch.Tensor:
    """Fast mode's estimation input: ``x`` (1, C, H, W) resized by ``tile / max(H, W)``
    (nearest-exact), each channel's mean and (unbiased) std set back to ``x``'s, clamped to ``x``'s
    range (nearest sampling keeps values, the std restore keeps the spread)."""
    small = F.interpolate(x, scale_factor=tile / max(x.shape[-2:]), mode="nearest-exact")
    std, mean = torch.std_mean(x, dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    small_std, small_mean = torch.std_mean(small, dim=(0, 2, 3), keepdim=True)
    small = (small - small_mean) / small_std * std + mean
    return small.clamp(x.min(), x.max())


# ---- the encoder and decoder as flat step lists ---------------------------------------------------
# A step is ("norm", GroupNorm) or ("op", fn(tile) -> None), fn changing tile.x / tile.residual.


def _call(module: nn.Module) -> Callable[[_Tile], None]:
    def fn(t: _Tile) -> None:
        t.x = module(t.x)

    return fn


def _push(shortcut: nn.Module | None) -> Callable[[_Tile], None]:
    def fn(t: _Tile) -> None:
        t.residual.append(t.x if shortcut is None else shortcut(t.x))

    return fn


def _pop(scale: float) -> Callable[[_Tile], None]:
    def fn(t: _Tile) -> None:
        t.x = (t.residual.pop() + t.x) / scale

    return fn


def _resnet(block) -> list:
    if block.upsample is not None or block.downsample is not None or block.time_emb_proj is not None:
        raise NotImplementedError("tiled VAE: resnet blocks with resampling or time embeddings")
    return [
        ("op", _push(block.conv_shortcut)),
        ("norm", block.norm1),
        ("op", _call(block.nonlinearity)),
        ("op", _call(block.conv1)),
        ("norm", block.norm2),
        ("op", _call(block.nonlinearity)),
        ("op", _call(block.conv2)),
        ("op", _pop(block.output_scale_factor)),
    ]


def _attention_core(attn) -> Callable[[_Tile], None]:
    """diffusers' spatial self-attention after its group norm: tokens of the tile, to_q/k/v,
    scaled dot-product attention, to_out."""

    def fn(t: _Tile) -> None:
        b, c, h, w = t.x.shape
        tokens = t.x.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        heads = attn.heads

        def split(y):  # (B, HW, C) -> (B, heads, HW, C / heads)
            return y.view(b, -1, heads, y.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(attn.to_q(tokens)), split(attn.to_k(tokens)), split(attn.to_v(tokens))
        )
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(b, h * w, -1)))
        t.x = out.transpose(1, 2).reshape(b, c, h, w)

    return fn


def _mid(block) -> list:
    steps = _resnet(block.resnets[0])
    for attn, resnet in zip(block.attentions, block.resnets[1:], strict=True):
        if attn is not None:
            steps += [("op", _push(None)), ("norm", attn.group_norm), ("op", _attention_core(attn))]
            steps.append(
                ("op", _pop(attn.rescale_output_factor) if attn.residual_connection else _drop_residual)
            )
        steps += _resnet(resnet)
    return steps


def _drop_residual(t: _Tile) -> None:
    t.residual.pop()


def encoder_steps(encoder: nn.Module) -> list:
    """diffusers ``Encoder.forward`` unrolled (conv_in, down blocks, mid block, norm, act, conv_out)."""
    steps = [("op", _call(encoder.conv_in))]
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            steps += _resnet(resnet)
        for down in block.downsamplers or []:
            steps.append(("op", _call(down)))
    steps += _mid(encoder.mid_block)
    return steps + [
        ("norm", encoder.conv_norm_out),
        ("op", _call(encoder.conv_act)),
        ("op", _call(encoder.conv_out)),
    ]


def decoder_steps(decoder: nn.Module) -> list:
    """diffusers ``Decoder.forward`` unrolled (conv_in, mid block, up blocks, norm, act, conv_out)."""
    steps = [("op", _call(decoder.conv_in))]
    steps += _mid(decoder.mid_block)
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            steps += _resnet(resnet)
        for up in block.upsamplers or []:
            steps.append(("op", _call(up)))
    return steps + [
        ("norm", decoder.conv_norm_out),
        ("op", _call(decoder.conv_act)),
        ("op", _call(decoder.conv_out)),
    ]


# ---- running the steps --------------------------------------------------------------------------


def _core_region(t: _Tile) -> tuple[slice, slice]:
    """Where the tile's core lies in its current activation (the resolution may have changed)."""
    top, left, bottom, right = t.padded
    ratio_y, ratio_x = t.x.shape[-2] / (bottom - top), t.x.shape[-1] / (right - left)
    ct, cl, cb, cr = t.core
    return (
        slice(round((ct - top) * ratio_y), round((cb - top) * ratio_y)),
        slice(round((cl - left) * ratio_x), round((cr - left) * ratio_x)),
    )


def _group_stats(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean and biased variance of (1, C, h, w) ``x``: (groups,), (groups,)."""
    grouped = x.reshape(groups, -1)
    return grouped.mean(1), grouped.var(1, unbiased=False)


def _normalise(norm: nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """GroupNorm of (1, C, h, w) ``x`` with the given per-group statistics, then its affine map."""
    g, c = norm.num_groups, x.shape[1]
    m, v = mean.to(x.dtype).view(1, g, 1), var.to(x.dtype).view(1, g, 1)
    y = ((x.reshape(1, g, -1) - m) / torch.sqrt(v + norm.eps)).reshape_as(x)
    if norm.affine:
        y = y * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)
    return y


def estimate_statistics(
    steps: list, small: torch.Tensor, device=None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fast mode: run ``steps`` on the shrunk copy (one piece) and return each GroupNorm's per-group
    (mean, variance) on it, in step order."""
    device = device or small.device
    piece = _Tile(small.to(device), (0, 0, *small.shape[-2:]), (0, 0, *small.shape[-2:]))
    stats = []
    for kind, what in steps:
        if kind == "norm":
            mean, var = _group_stats(piece.x, what.num_groups)
            stats.append((mean, var))
            piece.x = _normalise(what, piece.x, mean, var)
        else:
            what(piece)
    return stats


def _shared_group_norm(norm: nn.GroupNorm, tiles: list[_Tile], device) -> None:
    """GroupNorm with the statistics of all tiles' cores together (float64 sums)."""
    g = norm.num_groups
    total = squares = None
    count = 0
    for t in tiles:
        rows, cols = _core_region(t)
        core = t.x.to(device)[..., rows, cols].double()  # (1, C, h, w)
        grouped = core.reshape(g, -1)
        s, q = grouped.sum(1), (grouped * grouped).sum(1)
        total, squares = (s, q) if total is None else (total + s, squares + q)
        count += grouped.shape[1]
    mean = total / count
    var = (squares / count - mean * mean).clamp_(min=0)
    for t in tiles:
        t.x = _normalise(norm, t.x.to(device), mean, var).to(t.x.device)


def _run_lockstep(steps: list, tiles: list[_Tile], device, home, bar) -> None:
    """``shared_norm``: all tiles through each step together; GroupNorms over all cores."""
    for kind, what in steps:
        bar.update()
        if kind == "norm":
            _shared_group_norm(what, tiles, device)
            continue
        for t in tiles:
            t.x = t.x.to(device)
            t.residual = [r.to(device) for r in t.residual]
            what(t)
            t.x = t.x.to(home)
            t.residual = [r.to(home) for r in t.residual]


def _run_one_by_one(steps: list, tiles: list[_Tile], stats: list, device, home, bar) -> None:
    """``fast``: each tile through all steps on the device, GroupNorms with the fixed ``stats``."""
    for t in tiles:
        t.x = t.x.to(device)
        norms = iter(stats)
        for kind, what in steps:
            if kind == "norm":
                mean, var = next(norms)
                t.x = _normalise(what, t.x, mean.to(device), var.to(device))
            else:
                what(t)
        t.x = t.x.to(home)
        bar.update()


def run_tiled(
    steps: list,
    x: torch.Tensor,
    tile: int,
    pad: int,
    scale: float,
    statistics: str = "fast",
    device=None,
    label: str | None = None,
) -> torch.Tensor:
    """Run ``steps`` on (1, C, H, W) ``x`` as padded tiles (``tile``/``pad`` in input units) with
    GroupNorm statistics shared by ``statistics`` (``fast`` | ``shared_norm``); the output is
    (1, C', H * scale, W * scale) where ``x`` lives. ``label`` names a progress bar."""
    from coz.run.progress import Progress

    if x.shape[0] != 1:
        raise ValueError(f"tiled VAE takes one image at a time, got a batch of {x.shape[0]}")
    if statistics not in STATISTICS:
        raise ValueError(f"tiled VAE statistics {statistics!r}: use one of {', '.join(STATISTICS)}")
    device = device or x.device
    height, width = x.shape[-2:]
    tiles = []
    for core in core_boxes(height, width, tile, pad):
        ct, cl, cb, cr = core
        padded = (max(0, ct - pad), max(0, cl - pad), min(height, cb + pad), min(width, cr + pad))
        tiles.append(_Tile(x[..., padded[0] : padded[2], padded[1] : padded[3]], padded, core))
    home = x.device
    if statistics == "fast":
        with torch.no_grad():
            stats = estimate_statistics(steps, shrunk_copy(x.to(device), tile), device)
        with Progress(len(tiles), label, "tiles", leave=False, enabled=bool(label)) as bar:
            _run_one_by_one(steps, tiles, stats, device, home, bar)
    else:
        with Progress(
            len(steps), f"{label} ({len(tiles)} tiles)", "layers", leave=False, enabled=bool(label)
        ) as bar:
            _run_lockstep(steps, tiles, device, home, bar)
    out = None
    for t in tiles:
        rows, cols = _core_region(t)
        y = t.x[..., rows, cols]
        if out is None:
            out = y.new_zeros(1, y.shape[1], round(height * scale), round(width * scale))
        ct, cl, cb, cr = (round(v * scale) for v in t.core)
        out[..., ct:cb, cl:cr] = y
    return out


def tiled_encode(
    vae,
    x: torch.Tensor,
    tile: int = 1024,
    pad: int = 32,
    statistics: str = "fast",
    device=None,
    label: str | None = None,
) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> the posterior's moments (1, 2c, H/8, W/8) (before ``quant_conv``
    only if the VAE has none), encoder tiles of ``tile`` px with ``pad`` px of context; the plain
    encoder when the image fits one tile with its padding."""
    device = device or x.device
    if needs_tiles(*x.shape[-2:], tile, pad):
        h = run_tiled(encoder_steps(vae.encoder), x, tile, pad, 1 / 8, statistics, device, label)
    else:
        h = vae.encoder(x.to(device)).to(x.device)
    if getattr(vae, "quant_conv", None) is not None:
        h = vae.quant_conv(h.to(device)).to(h.device)  # 1x1: pointwise, safe whole
    return h


def tiled_decode(
    vae,
    z: torch.Tensor,
    tile: int = 128,
    pad: int = 11,
    statistics: str = "fast",
    device=None,
    label: str | None = None,
) -> torch.Tensor:
    """Latents (1, c, h, w), already unscaled -> (1, 3, 8h, 8w), decoder tiles of ``tile`` latents
    with ``pad`` latents of context; the plain decoder when the latents fit one tile with padding."""
    device = device or z.device
    if getattr(vae, "post_quant_conv", None) is not None:
        z = vae.post_quant_conv(z.to(device)).to(z.device)
    if not needs_tiles(*z.shape[-2:], tile, pad):
        return vae.decoder(z.to(device)).to(z.device)
    return run_tiled(decoder_steps(vae.decoder), z, tile, pad, 8, statistics, device, label)
