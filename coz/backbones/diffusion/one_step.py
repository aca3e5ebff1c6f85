"""What the one-step diffusion SR backbones (OSEDiff on SD3 and SD2.1, S3Diff) share: posterior noise
drawn per image, and ``upscale`` as one ``restore`` of the bicubic view with the colour fix."""

from __future__ import annotations

import hashlib

import torch

from coz.backbones.base import Backbone
from coz.backbones.diffusion.color_fix import color_fix


class OneStepDiffusion(Backbone):
    """A backbone that restores the bicubic view in one diffusion step.

    Subclasses set ``seed``, ``generator``, ``color_fix`` and ``_device`` and implement
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
