"""The chain a zoom config describes: its backbone and prompt extractor loaded once, its
full-image options checked. ``python -m coz.zoom``, the Python API (:mod:`coz.api`) and
``coz.evaluate`` build their chains here, so the three zoom alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from coz.errors import CozError
from coz.modes import INTERPOLATION_MODES

if TYPE_CHECKING:  # full_options runs in a tool's config check, before torch loads
    import torch

    from coz.chain import ZoomChain
    from coz.full_image_options import FullImageOptions
    from coz.run.timing import PhaseTimer


def full_options(cfg: DictConfig) -> FullImageOptions | None:
    """``zoom=full``'s settings, checked (None for the other modes)."""
    if cfg.zoom.mode != "full":
        return None
    from coz.full_image_options import FullImageOptions  # imports torch (coz.tiling): zoom=full only

    try:
        return FullImageOptions.from_config(cfg.zoom)
    except ValueError as err:
        raise CozError(str(err)) from None


def build_chain(
    cfg: DictConfig, device: torch.device, timer: PhaseTimer, full: FullImageOptions | None = None
) -> ZoomChain:
    """Load ``cfg``'s backbone and prompt extractor (none for the interpolation modes) into a chain."""
    from coz.backbones import build_backbone
    from coz.chain import ZoomChain
    from coz.prompts import NullPrompt, build_prompt_extractor

    mode = cfg.zoom.mode
    with timer.phase("load"):
        if mode in INTERPOLATION_MODES:  # no model, no prompts
            backbone, prompter = None, NullPrompt()
        else:
            backbone = build_backbone(cfg.backbone, device)
            prompter = build_prompt_extractor(cfg.prompt, device=str(device), tiles=mode == "full")
    return ZoomChain(
        mode,
        backbone,
        prompter,
        steps=cfg.zoom.steps,
        factor=cfg.zoom.factor,
        size=cfg.zoom.size,
        user_prompt=cfg.user_prompt,
        timer=timer,
        full=full,
        to_8bit=cfg.zoom.to_8bit,
    )
