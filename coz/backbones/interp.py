"""Interpolation as a backbone: 4x nearest or bicubic, no model. The chain's lower bounds."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coz.backbones.base import Backbone


class Interpolation(Backbone):
    def __init__(self, mode: str, scale: int = 4) -> None:
        if mode not in ("nearest", "bicubic"):
            raise ValueError(f"interpolation backbone mode {mode!r} is not nearest or bicubic")
        self.mode, self.scale, self.name = mode, scale, mode

    def upscale(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(images, scale_factor=self.scale, mode="nearest-exact")
        out = F.interpolate(images, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out.clamp_(0, 1)
