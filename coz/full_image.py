"""Full-image super-resolution under Chain-of-Zoom (``zoom=full``; paper Appendix H and the
authors' later full-image script, docs/fidelity.md "OSEDiff-SD3 inference and full-image SR").

A step magnifies the *whole* current image 4x instead of its center quarter:

1. ``up``: the image LANCZOS-upsampled 4x (the authors' resize; what a diffusion backbone restores).
2. The backbone names its tile grid on ``up`` (:meth:`Backbone.full_image_tiles`): latent tiles of
   64 with overlap 16 for OSEDiff-SD3 (its own latent path), low-res pixel tiles of 128 with overlap
   32 through ``upscale`` for every other backbone, SD2.1 and S3Diff included (each tile its own VAE
   pass; their repos' latent tiling, 96/32, is not implemented): both are 512-px tiles overlapping
   by 128 px of the output.
3. Every tile gets its own prompt: its view (the tile's crop of ``up``; for SD3 the VAE decode of
   the tile's latent, as released: ``tile_view: decoded``) goes to the prompt
   extractor with, for AR-2 (``multiscale``), a copy of the whole image whose short side is
   ``size`` (512) as the first image: by default the ORIGINAL input, fixed for every step, as the
   released script (``context: input``); ``context: current`` uses the image being magnified. The views go in batches of ``prompt_batch``; the prompt
   count equals the tile count.
4. :meth:`Backbone.upscale_full` super-resolves tile by tile and blends with Gaussian weights
   (tiled VAE encode and decode around the latent tiles for the diffusion backbones).

Sizes, as in the authors' script: x0 is the input itself (no resize to 512, no crop), unless
``input_size`` asks for a short side; it is trimmed by at most 3 px to sides that are multiples of
4, so every state has whole latent patches (16 px). The authors run one step by default. Cost
grows 16x per step: a 512x512 input gives 2048x2048 after one step (25 tiles) and 8192x8192 after
two (441 tiles); four would be 131072x131072, which ``max_output_pixels`` refuses up front.

Memory: the accelerator holds the models and one tile at a time. The host holds the image as
uint8 (``lr`` and ``up``, 3 bytes per pixel each) and the blending accumulators (float32 image plus
weights, 16 bytes per output pixel; the latents' are 1/16 of that): these grow with the image,
nothing else does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from coz.backbones.base import Backbone
from coz.full_image_options import SIDE_MULTIPLE, FullImageOptions
from coz.images import ImageInputError
from coz.prompts.base import NullPrompt, PromptExtractor
from coz.run.progress import Progress
from coz.run.timing import PhaseTimer

log = logging.getLogger("coz.zoom")

Box = tuple[int, int, int, int]  # (top, left, bottom, right)


@dataclass
class FullStepResult:
    state: Image.Image  # the whole image magnified 4x
    view: Image.Image  # its LANCZOS 4x upsampling: what the backbone restored, the views' source
    prompts: list[str]  # one per tile, in tile order
    tiles: list[Box]  # the tiles, in output pixels


def prepare_full_x0(
    img: Image.Image, options: FullImageOptions, steps: int, factor: int = 4, name: str = ""
) -> tuple[Image.Image, list[str]]:
    """x0 of a full-image zoom: the input (short side resized to ``input_size`` if set, LANCZOS),
    center-trimmed to sides that are multiples of 4. Refuses (one line) an image whose last state
    would exceed ``max_output_pixels``."""
    label = name or "image"
    notes: list[str] = []
    w, h = img.size
    if options.input_size is not None and min(w, h) != options.input_size:
        s = options.input_size / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        notes.append(f"{label}: {w}x{h} resized (LANCZOS) to {img.width}x{img.height} (zoom.input_size)")
        w, h = img.size
    tw, th = w - w % SIDE_MULTIPLE, h - h % SIDE_MULTIPLE
    if tw == 0 or th == 0:
        raise ImageInputError(
            label, f"{w}x{h} is too small for full-image SR (sides of at least {SIDE_MULTIPLE} px)"
        )
    if (tw, th) != (w, h):
        left, top = (w - tw) // 2, (h - th) // 2
        img = img.crop((left, top, left + tw, top + th))
        notes.append(f"{label}: {w}x{h} trimmed to {tw}x{th} (full-image SR needs sides divisible by 4)")
    grow = factor**steps
    out_pixels = tw * grow * th * grow
    if out_pixels > options.max_output_pixels:
        raise ImageInputError(
            label,
            f"{steps} full-image step(s) of {factor}x would make {tw * grow}x{th * grow} "
            f"({out_pixels / 1e6:.0f} Mpx), over zoom.max_output_pixels={options.max_output_pixels}; "
            "use fewer zoom.steps or a smaller zoom.input_size",
        )
    return img, notes


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) uint8 on the CPU (a third of the float32 size)."""
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).unsqueeze(0)


def float_to_pil(x: torch.Tensor, rule: str = "round") -> Image.Image:
    """(1, 3, H, W) float in [0, 1] -> 8-bit RGB, rounding or truncating (``rule``, see
    :func:`coz.geometry.to_8bit`); works in place on ``x`` (no full-size float copies of a large image)."""
    scaled = x[0].clamp_(0, 1).mul_(255)
    pixels = (scaled.round_() if rule == "round" else scaled.floor_()).to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pixels.cpu().numpy()))


def context_copy(img: Image.Image, size: int) -> Image.Image:
    """The whole image with its short side ``size`` (LANCZOS; the authors' 512-px copy)."""
    s = size / min(img.size)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)


def tile_views(up: Image.Image, tiles: list[Box]) -> list[Image.Image]:
    """Each tile's crop of the upsampled image: the view its prompt describes."""
    return [up.crop((left, top, right, bottom)) for top, left, bottom, right in tiles]


def super_resolve_full(
    backbone: Backbone,
    prompter: PromptExtractor,
    image: Image.Image,
    options: FullImageOptions,
    *,
    size: int = 512,
    user_prompt: str = "",
    timer: PhaseTimer | None = None,
    original: Image.Image | None = None,
    rule: str = "round",
) -> FullStepResult:
    """One full-image step: ``image`` (w x h) -> its ``backbone.scale``-times magnification.
    ``original``: the zoom's x0, the VLM's fixed first image under ``options.context == "input"``;
    ``rule``: how the result becomes 8-bit (:func:`coz.geometry.to_8bit`)."""
    timer = timer or PhaseTimer()
    w, h = image.size
    f = backbone.scale
    up = image.resize((w * f, h * f), Image.LANCZOS)
    tiles = backbone.full_image_tiles(h, w, options)
    log.info(
        "full-image step: %dx%d -> %dx%d (%.1f Mpx), %d tiles",
        w,
        h,
        w * f,
        h * f,
        w * f * h * f / 1e6,
        len(tiles),
    )
    whole = original if options.context == "input" and original is not None else image
    context = context_copy(whole, size) if options.multiscale else None
    up_pixels = pil_to_uint8(up)
    texts: list[str] = []
    batches = range(0, len(tiles), options.prompt_batch)
    shown = not isinstance(prompter, NullPrompt)  # the null prompt takes no time: no bar
    with (
        timer.phase("prompt"),
        Progress(len(batches), "prompts", "batches", leave=False, enabled=shown) as bar,
    ):
        views = None
        if options.tile_view == "decoded" and not isinstance(prompter, NullPrompt):
            with torch.inference_mode():
                views = backbone.full_image_views(up_pixels, tiles, options)
        for start in batches:
            stop = start + options.prompt_batch
            # crops of ``up`` are cut per batch: all of them at once would be image-sized memory
            chunk = views[start:stop] if views is not None else tile_views(up, tiles[start:stop])
            texts += prompter.extract(chunk, [context] * len(chunk))
            bar.update()
    if len(texts) != len(tiles):
        raise RuntimeError(
            f"prompt extractor {prompter.name} gave {len(texts)} prompts for {len(tiles)} tiles"
        )
    prompts = [backbone.format_prompt(t, user_prompt) for t in texts]
    with timer.phase("sr"), torch.inference_mode():
        out = backbone.upscale_full(pil_to_uint8(image), up_pixels, prompts, options)
        if tuple(out.shape[-2:]) != (h * f, w * f):
            raise RuntimeError(
                f"backbone {backbone.name} returned {out.shape[-1]}x{out.shape[-2]} for full-image SR, "
                f"expected {w * f}x{h * f}"
            )
        state = float_to_pil(out, rule)
    return FullStepResult(state, up, prompts, tiles)
