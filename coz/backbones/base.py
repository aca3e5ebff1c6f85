"""The one interface every SR backbone implements: magnify a batch 4x, given one prompt per image."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Backbone(ABC):
    """A 4x super-resolution model as the zoom chain sees it.

    Two kinds of models exist in this field, and the chain feeds each what it expects
    (implementation-facts.md, section 1):
    - CNN-style SR (Real-ESRGAN): takes the low-res crop and returns it 4x larger;
      ``takes_upsampled_input = False``.
    - Diffusion SR (OSEDiff, S3Diff): takes the crop already bicubic-upsampled to the output
      size and restores it; ``takes_upsampled_input = True``.
    Either way ``upscale`` returns the magnified view, values in [0, 1].
    """

    scale: int = 4
    takes_upsampled_input: bool = False
    # A diffusion backbone that also needs the small low-res crop itself (S3Diff's degradation
    # estimator) sets this; the chain then passes ``low_res=`` (B, 3, size/4, size/4) to ``upscale``.
    wants_low_res: bool = False
    name: str = "backbone"

    @abstractmethod
    def upscale(self, images: torch.Tensor, prompts: list[str], **kwargs) -> torch.Tensor:
        """(B, 3, h, w) float in [0, 1] -> (B, 3, H, W) in [0, 1], H = 4h (or h if upsampled input).

        ``kwargs`` carries optional inputs a backbone asked for (``low_res`` if ``wants_low_res``)."""

    def to(self, device: torch.device | str) -> Backbone:
        """Move the model; backbones without weights ignore this."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")
