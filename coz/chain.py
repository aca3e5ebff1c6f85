"""The scale-autoregressive zoom chain (paper section 3.1, Algorithm 1) and its baselines.

x0 is the 512-px input; step i crops the center 1/4 of x_{i-1}, and the backbone magnifies it
4x into x_i, guided by a prompt extracted from the zoomed view (and, for AR-2, from x_{i-1}).
The chain knows nothing about which backbone or prompt extractor it drives.

``full`` (full-image SR, :mod:`coz.full_image`) magnifies the whole of x_{i-1} instead: x0 is the
input at its own size, and every state is 4x the previous one, super-resolved tile by tile with
one prompt per tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from coz.backbones.base import Backbone
from coz.full_image import FullImageOptions, super_resolve_full
from coz.geometry import TO_8BIT, center_crop, to_pil, to_tensor
from coz.modes import INTERPOLATION_MODES, MODES
from coz.prompts.base import PromptExtractor
from coz.run.timing import PhaseTimer


@dataclass
class Step:
    """One zoom step of one image."""

    scale: int  # magnification of ``state`` relative to x0
    state: Image.Image  # the scale-state x_i
    view: Image.Image | None = None  # the bicubic zoom the backbone and the prompt saw (None: no model)
    prompt: str | None = None  # the text the backbone saw (None: no model; full: the tiles', one a line)
    # full mode only: one prompt per tile, and the tiles as (top, left, bottom, right) in ``state``
    tile_prompts: list[str] | None = None
    tiles: list[tuple[int, int, int, int]] | None = None


@dataclass
class Zoom:
    """All scale-states of one image."""

    x0: Image.Image
    steps: list[Step] = field(default_factory=list)
    full: bool = False  # full-image SR: each state is the whole previous one magnified, any shape

    @property
    def states(self) -> list[Image.Image]:
        return [self.x0, *(s.state for s in self.steps)]

    @property
    def scales(self) -> list[int]:
        return [1, *(s.scale for s in self.steps)]


class ZoomChain:
    """Runs one zoom mode over a batch of x0 images, one step at a time for the whole batch."""

    def __init__(
        self,
        mode: str,
        backbone: Backbone | None,
        prompter: PromptExtractor,
        steps: int = 4,
        factor: int = 4,
        size: int = 512,
        user_prompt: str = "",
        timer: PhaseTimer | None = None,
        full: FullImageOptions | None = None,
        to_8bit: str = "backbone",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"zoom mode {mode!r} is not one of {', '.join(MODES)}")
        if backbone is None and mode not in INTERPOLATION_MODES:
            raise ValueError(f"zoom mode {mode!r} needs a backbone")
        if steps < 1 or factor < 2 or size % factor:
            raise ValueError(
                f"zoom needs steps >= 1, factor >= 2 and size divisible by factor; "
                f"got steps={steps}, factor={factor}, size={size}"
            )
        if mode in ("onestep", *INTERPOLATION_MODES) and size // factor**steps < 1:
            raise ValueError(f"{mode}: a {size}-px image has no center 1/{factor**steps} to zoom into")
        self.mode, self.backbone, self.prompter = mode, backbone, prompter
        self.steps, self.factor, self.size = steps, factor, size
        if mode == "full" and factor != backbone.scale:
            raise ValueError(f"zoom=full magnifies by the backbone's {backbone.scale}x; got factor={factor}")
        self.user_prompt = user_prompt
        # how a backbone's float output becomes the 8-bit state the next step reads: ``backbone``
        # follows the backbone's release (the diffusion scripts truncate, CNN code rounds)
        if to_8bit not in ("backbone", *TO_8BIT):
            raise ValueError(f"zoom.to_8bit={to_8bit!r}: use backbone, {' or '.join(TO_8BIT)}")
        self.to_8bit = getattr(backbone, "to_8bit", "round") if to_8bit == "backbone" else to_8bit
        self.timer = timer or PhaseTimer()
        self.full = full or FullImageOptions()
        self._names: list[str] = []  # of the images being zoomed, for warnings

    def run(
        self,
        x0s: list[Image.Image],
        on_step: Callable[[int], None] | None = None,
        names: list[str] | None = None,
    ) -> list[Zoom]:
        """Zoom every image ``steps`` times; ``on_step(n_images)`` is called after each batch step.
        ``names`` label the images in warnings (a prompt CLIP cuts is reported with image and step)."""
        self._names = names or [f"image {i + 1}" for i in range(len(x0s))]
        for x0 in x0s:
            if self.mode == "full":
                if x0.width % 4 or x0.height % 4:
                    raise ValueError(
                        f"full-image x0 sides must be multiples of 4, got {x0.width}x{x0.height}"
                    )
            elif x0.size != (self.size, self.size):
                raise ValueError(f"x0 must be {self.size}x{self.size}, got {x0.width}x{x0.height}")
        zooms = [Zoom(x0, full=self.mode == "full") for x0 in x0s]
        for i in range(1, self.steps + 1):
            scale = self.factor**i
            if self.mode == "full":  # images of any size: one at a time, tile by tile
                new_steps = [
                    self._super_resolve_full(z.states[-1], scale, self._names[j], z.x0)
                    for j, z in enumerate(zooms)
                ]
            elif self.mode in INTERPOLATION_MODES:
                new_steps = [self._interpolate(z.x0, scale) for z in zooms]
            elif self.mode == "onestep":
                new_steps = self._super_resolve([z.x0 for z in zooms], scale, scale, multiscale=False)
            else:
                sources = [z.states[-1] for z in zooms]
                multiscale = self.mode == "recursive_multiscale"
                new_steps = self._super_resolve(sources, self.factor, scale, multiscale)
            for zoom, step in zip(zooms, new_steps, strict=True):
                zoom.steps.append(step)
            if on_step:
                on_step(len(zooms))
        return zooms

    def _interpolate(self, x0: Image.Image, scale: int) -> Step:
        crop = center_crop(x0, scale)
        return Step(scale, crop.resize((self.size, self.size), INTERPOLATION_MODES[self.mode]))

    def check_clip(self, prompts: list[str], labels: list[str]) -> None:
        """Warn, naming the image and step, where CLIP's 77 tokens cut a final prompt (prompt.check_clip)."""
        if not getattr(self.prompter, "check_clip", False):
            return
        from coz.prompts.hygiene import warn_if_clip_truncates

        for prompt, label in zip(prompts, labels, strict=True):
            if prompt:
                warn_if_clip_truncates(prompt, label)

    def _super_resolve_full(
        self, source: Image.Image, scale: int, name: str = "image", x0: Image.Image | None = None
    ) -> Step:
        """Magnify the whole of ``source``: tiles, one prompt per tile (see :mod:`coz.full_image`)."""
        result = super_resolve_full(
            self.backbone,
            self.prompter,
            source,
            self.full,
            size=self.size,
            user_prompt=self.user_prompt,
            timer=self.timer,
            original=x0,
            rule=self.to_8bit,
        )
        self.check_clip(
            result.prompts, [f"{name}, x{scale}, tile {j + 1}" for j in range(len(result.prompts))]
        )
        return Step(
            scale,
            result.state,
            result.view,
            "\n".join(result.prompts) if any(result.prompts) else "",
            tile_prompts=result.prompts,
            tiles=result.tiles,
        )

    def _super_resolve(
        self, sources: list[Image.Image], crop_factor: int, scale: int, multiscale: bool
    ) -> list[Step]:
        """Crop the center 1/crop_factor of each source, extract prompts, magnify with the backbone."""
        crops = [center_crop(src, crop_factor) for src in sources]
        views = [c.resize((self.size, self.size), Image.BICUBIC) for c in crops]
        previous = sources if multiscale else [None] * len(sources)
        with self.timer.phase("prompt"):
            texts = self.prompter.extract(views, previous)
        prompts = [self.backbone.format_prompt(t, self.user_prompt) for t in texts]
        self.check_clip(prompts, [f"{name}, x{scale}" for name in self._names])

        # The small crop at the backbone's input size: a CNN magnifies it itself; direct SR first
        # brings its smaller crop to that size.
        lr_size = self.size // self.backbone.scale
        small = [c if c.width == lr_size else c.resize((lr_size, lr_size), Image.BICUBIC) for c in crops]
        lr = views if self.backbone.takes_upsampled_input else small
        batch = to_tensor(lr).to(self.backbone.device)
        extra = {}
        if self.backbone.wants_low_res:
            extra["low_res"] = to_tensor(small).to(self.backbone.device)
        with self.timer.phase("sr"), torch.inference_mode():
            out = self.backbone.upscale(batch, prompts, **extra)
        states = to_pil(out, self.to_8bit)
        if states[0].size != (self.size, self.size):
            raise RuntimeError(
                f"backbone {self.backbone.name} returned {states[0].width}x{states[0].height}, "
                f"expected {self.size}x{self.size}"
            )
        return [Step(scale, s, v, p) for s, v, p in zip(states, views, prompts, strict=True)]
