"""The schema of ``coz.zoom``'s config (conf/zoom/zoom.yaml) and of each ``zoom=`` mode
(conf/shared/zoom/), shared with ``coz.evaluate`` (:mod:`coz.run.schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from coz.backbones.schema import BACKBONES
from coz.prompts.schema import PROMPTS
from coz.run.schema import group, number, one_of, rule, whole
from coz.run.shared_schemas import LOGGERS


def _device(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value == "auto":
        return True
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


@dataclass
class ZoomMode:
    """``zoom.*``: the chain's geometry (recursive_multiscale, recursive, onestep, nearest, bicubic)."""

    mode: str = one_of("recursive_multiscale", "recursive", "onestep", "nearest", "bicubic", "full")
    steps: int = whole(1)
    factor: int = whole(2)
    size: int = whole(1)
    to_8bit: str = one_of("backbone", "round", "truncate")


@dataclass
class FullZoom(ZoomMode):
    """``zoom=full``: the cross-key rules (overlap below tile, ...) are FullImageOptions'."""

    input_size: int | None = whole(4, null=True)
    max_output_pixels: int = whole(1)
    multiscale: bool = MISSING
    tile_view: str = one_of("decoded", "upsampled")
    context: str = one_of("input", "current")
    prompt_batch: int = whole(1)
    latent_tile: int = whole(2)
    latent_overlap: int = whole(0)
    pixel_tile: int = whole(1)
    pixel_overlap: int = whole(0)
    vae_tiling: str = one_of("fast", "shared_norm", "blended")
    vae_encoder_tile: int = whole(8)
    vae_encoder_pad: int = whole(0)
    vae_encoder_overlap: int = whole(0)
    vae_decoder_tile: int = whole(1)
    vae_decoder_pad: int = whole(0)
    vae_decoder_overlap: int = whole(0)
    tile_variance: float = number(above=0)
    latent_shift: str = one_of("none", "test", "train", "backbone")


ZOOM_MODES = {
    **{mode: ZoomMode for mode in ("recursive_multiscale", "recursive", "onestep", "nearest", "bicubic")},
    "full": FullZoom,
}


@dataclass
class Save:
    strip: bool = MISSING
    gif: bool = MISSING
    gif_size: int = whole(16)
    per_scale: bool = MISSING


@dataclass
class RunKeys:
    """What every tool that runs models reads: its seed, device and CPU threads."""

    seed: int = whole(0)
    device: str = rule("auto, cpu, cuda or cuda:N", _device)
    threads: int | str = whole(1, auto=True)


@dataclass
class ChainKeys(RunKeys):
    """What coz.zoom and coz.evaluate share: the images and the chain's components."""

    batch_size: int = whole(1)
    user_prompt: str = MISSING
    alpha: str = one_of("white", "drop")
    max_pixels: int | None = whole(1, null=True)
    zoom: Any = group(ZOOM_MODES, by="mode")
    backbone: Any = group(BACKBONES)
    prompt: Any = group(PROMPTS)
    logger: Any = group(LOGGERS)


@dataclass
class ZoomTool(ChainKeys):
    input: str = MISSING
    save: Save = MISSING
