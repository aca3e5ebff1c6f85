"""The one interface every SR backbone implements: magnify a batch 4x, given one prompt per image.

Full-image SR (``zoom=full``) goes through two more methods with a generic default that works for
every backbone: :meth:`Backbone.full_image_tiles` (the tile grid, one prompt per tile) and
:meth:`Backbone.upscale_full` (pixel tiles through :meth:`Backbone.upscale`, Gaussian-blended).
Latent diffusion backbones override both to tile their latents instead (see ``sd3.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from coz.prompts.base import with_user_prompt
from coz.tiling import tile_boxes, tiled_apply

if TYPE_CHECKING:
    from coz.full_image_options import FullImageOptions


class Backbone(ABC):
    """A 4x super-resolution model as the zoom chain sees it.

    Two kinds of models exist in this field, and the chain feeds each what it expects
    (docs/fidelity.md, "The zoom chain"):
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
    # How the chain turns this backbone's output into the 8-bit state the next step reads, as its
    # release does (``zoom.to_8bit=backbone``): CNN code (Real-ESRGAN's) rounds.
    to_8bit: str = "round"

    def format_prompt(self, extracted: str, user_prompt: str) -> str:
        """The text this backbone's encoders get from an extracted prompt and the user's: the
        Chain-of-Zoom script's "{extracted}, {user}," (the user's text only when given)."""
        return with_user_prompt(extracted, user_prompt)

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

    # ---- full-image SR (zoom=full) ----------------------------------------------------------
    def full_image_tiles(
        self, height: int, width: int, options: FullImageOptions
    ) -> list[tuple[int, int, int, int]]:
        """The tiles of full-image SR of a ``height`` x ``width`` image, as (top, left, bottom,
        right) boxes in output pixels, in the order :meth:`upscale_full` takes its prompts.

        Default: low-res pixel tiles of ``options.pixel_tile`` overlapping by
        ``options.pixel_overlap`` (128 and 32: 512-px output tiles overlapping by 128)."""
        f = self.scale
        boxes = tile_boxes(height, width, options.pixel_tile, options.pixel_overlap)
        return [(t * f, le * f, b * f, r * f) for t, le, b, r in boxes]

    def full_image_views(self, up: torch.Tensor, tiles: list, options: FullImageOptions) -> list | None:
        """Each tile's view for its prompt, if this backbone makes its own (SD3: the VAE decode of
        the tile's latent, as released); None: the tiles' crops of the upsampled image."""
        return None

    def upscale_full(
        self, lr: torch.Tensor, up: torch.Tensor, prompts: list[str], options: FullImageOptions
    ) -> torch.Tensor:
        """Magnify a whole image tile by tile, each tile with its own prompt.

        ``lr``: (1, 3, h, w) uint8 on the CPU, the whole image; ``up``: (1, 3, 4h, 4w) uint8 on the
        CPU, its LANCZOS 4x upsampling; ``prompts``: one per tile of :meth:`full_image_tiles`.
        Returns (1, 3, 4h, 4w) float32 in [0, 1] on the CPU.

        Default: each tile goes through :meth:`upscale` (the low-res tile for a CNN, its crop of
        ``up`` for a backbone that takes upsampled input; ``low_res=`` too where asked for), and
        the outputs are blended with Gaussian weights. The device sees one tile at a time; the
        host holds the uint8 inputs and the float32 output accumulator.
        """
        f = self.scale
        unit = f if self.takes_upsampled_input else 1  # tile units of the tensor that is tiled
        lr_boxes = tile_boxes(lr.shape[-2], lr.shape[-1], options.pixel_tile, options.pixel_overlap)
        if len(prompts) != len(lr_boxes):
            raise ValueError(f"{len(lr_boxes)} tiles but {len(prompts)} prompts")

        def one_tile(tile: torch.Tensor, index: int) -> torch.Tensor:
            extra = {}
            if self.wants_low_res:
                t, le, b, r = lr_boxes[index]
                extra["low_res"] = lr[..., t:b, le:r].to(self.device).float().div_(255)
            x = tile.to(self.device).float().div_(255)
            return self.upscale(x, [prompts[index]], **extra).float().cpu()

        return tiled_apply(
            one_tile,
            up if self.takes_upsampled_input else lr,
            options.pixel_tile * unit,
            options.pixel_overlap * unit,
            scale=1 if self.takes_upsampled_input else f,
            variance=options.tile_variance,
            label="SR tiles",
        )
