"""What the one-step diffusion SR backbones (OSEDiff on SD3 and SD2.1, S3Diff) share: the frame of
their constructors (names and colour fix checked first; trainability, posterior noise and device
last), which parameters train, building the tiny twin or the pretrained model, posterior noise drawn
per image, and ``upscale`` as one ``restore`` of the bicubic view with the colour fix."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from coz.backbones.base import Backbone
from coz.backbones.diffusion.color_fix import COLOR_FIXES, color_fix
from coz.errors import CozError


class OneStepDiffusion(Backbone):
    """A backbone that restores the bicubic view in one diffusion step.

    A subclass's constructor starts with :meth:`_begin` and ends with :meth:`_finish`; it lists its
    networks in :meth:`modules` and what trains in :meth:`trainable_parameters`, and implements
    ``restore(x, prompts, generators) -> (image in [-1, 1], latent)`` on ``x`` in [-1, 1].
    """

    takes_upsampled_input = True
    # the released scripts (Chain-of-Zoom, OSEDiff, S3Diff) save each output with ToPILImage,
    # which truncates (mul(255).byte()); the chain reads that state back for the next step
    to_8bit = "truncate"
    seed: int
    generator: torch.Generator
    color_fix: str
    _device: torch.device

    def _begin(self, name: str, base_model: str, color_fix: str) -> None:
        """The start of every constructor: the colour fix checked, the names kept."""
        if color_fix not in COLOR_FIXES:
            raise CozError(f"color_fix={color_fix!r}: use one of {', '.join(COLOR_FIXES)}")
        self.name, self.base_model, self.color_fix = name, base_model, color_fix

    def _finish(self, seed: int, trainable: bool) -> None:
        """The end of every constructor, its networks in place: what trains requires grad (if
        ``trainable``), the posterior noise seeded from ``seed``, on the CPU."""
        self.set_trainable(trainable)
        self.generator = torch.Generator("cpu")
        self.reseed(seed)
        self._device = torch.device("cpu")

    @classmethod
    def _tiny_or_pretrained(cls, cfg, **options):
        """The ``tiny_*`` twin (seeded by ``backbone.model_seed``) or ``backbone.model``, by the config's name."""
        if cfg.name.startswith("tiny_"):
            return cls.tiny(model_seed=cfg.model_seed, **options)
        return cls.from_pretrained(cfg.model, **options)

    def modules(self) -> list[nn.Module]:
        """Every network of the backbone."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates (everything else stays frozen)."""
        raise NotImplementedError

    def set_trainable(self, trainable: bool) -> None:
        """Only :meth:`trainable_parameters` may require grad (none unless ``trainable``)."""
        for module in self.modules():
            module.requires_grad_(False)
        if trainable:
            for p in self.trainable_parameters():
                p.requires_grad_(True)

    def to(self, device: torch.device | str):
        self._device = torch.device(device)
        for module in self.modules():
            module.to(self._device)
        return self

    def reseed(self, seed: int) -> None:
        """Restart the VAE posterior noise (a CPU generator: the same noise on every device)."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def image_generators(self, x: torch.Tensor) -> list[torch.Generator]:
        """One noise generator per image, seeded from the run seed and the image's own pixels.

        Inference draws the posterior noise of an image from these, so a zoom's output depends on
        the seed and the image alone: not on which images share its batch, nor on whether the run
        was resumed (training keeps the one running generator).
        """
        generators = []
        for image in x.detach().to("cpu", torch.float32):
            digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8).digest()
            seed = (self.seed * 0x9E3779B97F4A7C15 + int.from_bytes(digest, "little")) % 2**63
            generators.append(torch.Generator("cpu").manual_seed(seed))
        return generators

    def upscale(self, images: torch.Tensor, prompts: list[str], **kwargs) -> torch.Tensor:
        """(B, 3, H, W) bicubic view in [0, 1] -> restored (B, 3, H, W) in [0, 1] (H, W multiples of 8)."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected a float (B, 3, H, W) batch, got {tuple(images.shape)} {images.dtype}")
        if images.shape[-1] % 8 or images.shape[-2] % 8:
            raise ValueError(f"image sides must be multiples of 8, got {tuple(images.shape[-2:])}")
        with torch.no_grad():
            out, _ = self.restore(
                images.to(self._device) * 2 - 1, list(prompts), self.image_generators(images)
            )
            out = (out.float().clamp(-1.0, 1.0) + 1) / 2  # (B, 3, H, W) in [0, 1]
            out = color_fix(self.color_fix, out, images.to(out.device, torch.float32))
        return out.to(device=images.device, dtype=images.dtype)
