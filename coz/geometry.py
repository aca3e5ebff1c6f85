"""The zoom geometry of Chain-of-Zoom (docs/fidelity.md, "The zoom chain"), on PIL images.

The official code crops and resizes PIL images; doing the same here keeps every scale-state
pixel-compatible with it. Tensors appear only at the backbone boundary.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_box(size: int, factor: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the center 1/factor of a size x size image.

    Same integer arithmetic as the official code: for 512 and factor 4 this is (192, 192, 320, 320).
    """
    side = size // factor
    if side < 1:
        raise ValueError(f"zoom factor {factor} leaves nothing of a {size}-px image")
    return ((size - side) // 2, (size - side) // 2, (size + side) // 2, (size + side) // 2)


def center_crop(img: Image.Image, factor: int) -> Image.Image:
    """The center 1/factor of a square image (the region the next scale-state magnifies)."""
    if img.width != img.height:
        raise ValueError(f"scale-states are square; got {img.width}x{img.height}")
    return img.crop(center_box(img.width, factor))


def zoom_view(img: Image.Image, factor: int, size: int, resample: int = Image.BICUBIC) -> Image.Image:
    """Crop the center 1/factor and resize it to size x size: the (degraded) zoomed view."""
    return center_crop(img, factor).resize((size, size), resample)


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> (B, 3, H, W) float32 in [0, 1]."""
    arrays = np.stack([np.asarray(img.convert("RGB")) for img in images])  # (B, H, W, 3) uint8
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


TO_8BIT = ("round", "truncate")


def to_8bit(x: torch.Tensor, rule: str = "round") -> torch.Tensor:
    """Float pixels in [0, 1] -> uint8, by ``rule``: ``round`` to the nearest level, or
    ``truncate`` as the released diffusion scripts' ``ToPILImage`` does (``mul(255).byte()``: on
    average half a level darker, and the chain feeds each state to the next step)."""
    if rule not in TO_8BIT:
        raise ValueError(f"8-bit rule {rule!r}: use one of {', '.join(TO_8BIT)}")
    scaled = x.detach().float().clamp(0, 1).mul(255)
    return (scaled.round() if rule == "round" else scaled.floor()).to(torch.uint8)


def to_pil(batch: torch.Tensor, rule: str = "round") -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> 8-bit RGB PIL images, by :func:`to_8bit`'s ``rule``."""
    pixels = to_8bit(batch, rule).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]
