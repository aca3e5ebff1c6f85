"""Tiled VAE with GroupNorm statistics shared across tiles: the technique of the authors' later
full-image script (multidiffusion's "VAEHook"; implementation-facts.md section 3).

A VAE's GroupNorms normalise with the statistics of the WHOLE feature map. Encoding or decoding
tiles independently gives each tile its own statistics, so neighbouring tiles differ in brightness
and contrast; blending only hides the seams. Here the encoder (or decoder) is unrolled into a flat
list of steps, every tile goes through the list in lockstep, and at each GroupNorm the per-group
mean and variance are gathered over the cores of ALL tiles first, then applied to each tile. Each
tile carries ``pad`` of real context on every side (cut off at the end), so convolutions see their
neighbours; the cores are pasted side by side, not blended. Attention (the mid block's one layer)
stays local to its padded tile, as in the released technique.

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


@dataclass
class _Tile:
    x: torch.Tensor  # (1, C, h, w) the tile's current activation
    padded: Box  # in input units
    core: Box  # in input units
    residual: list[torch.Tensor] = field(default_factory=list)


def core_boxes(height: int, width: int, tile: int, multiple: int) -> list[Box]:
    """Non-overlapping cores of at most ``tile`` covering the image, sides multiples of ``multiple``
    (except where the image itself ends)."""

    def cuts(size: int) -> list[int]:
        n = max(1, math.ceil(size / tile))
        step = math.ceil(size / n / multiple) * multiple
        return [min(i * step, size) for i in range(n)] + [size]

    ys, xs = cuts(height), cuts(width)
    return [
        (ys[i], xs[j], ys[i + 1], xs[j + 1])
        for i in range(len(ys) - 1)
        for j in range(len(xs) - 1)
        if ys[i] < ys[i + 1] and xs[j] < xs[j + 1]
    ]


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


# ---- running the steps in lockstep ------------------------------------------------------------------


def _core_region(t: _Tile) -> tuple[slice, slice]:
    """Where the tile's core lies in its current activation (the resolution may have changed)."""
    top, left, bottom, right = t.padded
    ratio_y, ratio_x = t.x.shape[-2] / (bottom - top), t.x.shape[-1] / (right - left)
    ct, cl, cb, cr = t.core
    return (
        slice(round((ct - top) * ratio_y), round((cb - top) * ratio_y)),
        slice(round((cl - left) * ratio_x), round((cr - left) * ratio_x)),
    )


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
        x = t.x.to(device)
        c = x.shape[1]
        grouped = x.reshape(1, g, -1)
        m, v = mean.to(x.dtype).view(1, g, 1), var.to(x.dtype).view(1, g, 1)
        y = ((grouped - m) / torch.sqrt(v + norm.eps)).reshape_as(x)
        if norm.affine:
            y = y * norm.weight.view(1, c, 1, 1) + norm.bias.view(1, c, 1, 1)
        t.x = y.to(t.x.device)


def run_tiled(
    steps: list,
    x: torch.Tensor,
    tile: int,
    pad: int,
    scale: float,
    multiple: int,
    device=None,
    label: str | None = None,
) -> torch.Tensor:
    """Run ``steps`` on (1, C, H, W) ``x`` as padded tiles with shared GroupNorm statistics; the
    output is (1, C', H * scale, W * scale) where ``x`` lives. ``tile``/``pad`` in input units; core
    sides are multiples of ``multiple`` (8 for the encoder, so latents line up; 1 for the decoder).
    ``label`` names a progress bar over the layers (all tiles go through a layer together)."""
    from coz.run.progress import Progress

    if x.shape[0] != 1:
        raise ValueError(f"tiled VAE takes one image at a time, got a batch of {x.shape[0]}")
    device = device or x.device
    height, width = x.shape[-2:]
    tiles = []
    for core in core_boxes(height, width, tile, multiple):
        ct, cl, cb, cr = core
        padded = (max(0, ct - pad), max(0, cl - pad), min(height, cb + pad), min(width, cr + pad))
        tiles.append(_Tile(x[..., padded[0] : padded[2], padded[1] : padded[3]], padded, core))
    home = x.device
    with Progress(
        len(steps), f"{label} ({len(tiles)} tiles)", "layers", leave=False, enabled=bool(label)
    ) as bar:
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
    out = None
    for t in tiles:
        rows, cols = _core_region(t)
        y = t.x[..., rows, cols]
        if out is None:
            out = y.new_zeros(1, y.shape[1], round(height * scale), round(width * scale))
        ct, cl, cb, cr = (round(v * scale) for v in t.core)
        out[..., ct:cb, cl:cr] = y
    return out


def shared_norm_encode(
    vae, x: torch.Tensor, tile: int = 1024, pad: int = 32, device=None, label: str | None = None
) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> the posterior's moments (1, 2c, H/8, W/8) (before ``quant_conv``
    only if the VAE has none), encoder tiles of ``tile`` px with ``pad`` px of context."""
    h = run_tiled(encoder_steps(vae.encoder), x, tile, pad, 1 / 8, 8, device, label)
    if getattr(vae, "quant_conv", None) is not None:
        h = vae.quant_conv(h.to(device or h.device)).to(h.device)  # 1x1: pointwise, safe whole
    return h


def shared_norm_decode(
    vae, z: torch.Tensor, tile: int = 128, pad: int = 11, device=None, label: str | None = None
) -> torch.Tensor:
    """Latents (1, c, h, w), already unscaled -> (1, 3, 8h, 8w), decoder tiles of ``tile`` latents
    with ``pad`` latents of context."""
    if getattr(vae, "post_quant_conv", None) is not None:
        z = vae.post_quant_conv(z.to(device or z.device)).to(z.device)
    return run_tiled(decoder_steps(vae.decoder), z, tile, pad, 8, 1, device, label)
