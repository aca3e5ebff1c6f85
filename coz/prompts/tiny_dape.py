"""A tiny, random-weight RAM-shaped tagger: the offline ``prompt=tiny_dape`` twin of ``prompt=dape``.

Same tagging head, LoRA layout, thresholding and tag joining as DAPE (``coz/prompts/dape.py``);
the Swin-L backbone is replaced by a one-layer patch transformer and the 4,585 tags by a few
dozen words. Its tags are random: it tests plumbing, not quality.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from coz.prompts.dape import DAPEPrompts, RAMTagger

TINY_TAGS = (
    "animal",
    "bark",
    "bird",
    "branch",
    "brick",
    "building",
    "cat",
    "cloud",
    "fabric",
    "feather",
    "flower",
    "fur",
    "glass",
    "grass",
    "hair",
    "leaf",
    "metal",
    "moss",
    "mountain",
    "pattern",
    "person",
    "rock",
    "sand",
    "sky",
    "snow",
    "stone",
    "texture",
    "tree",
    "water",
    "wood",
    "wall",
    "window",
)


class TinyVisual(nn.Module):
    """Images (B, 3, S, S) -> tokens (B, 1 + L, width): patch embedding, one transformer layer, and
    the mean token first (as RAM's Swin prepends its average-pooled token)."""

    def __init__(self, width: int = 32, patch: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, patch, stride=patch)
        self.block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.block(self.patch_embed(x).flatten(2).transpose(1, 2)))  # (B, L, width)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)


def tiny_tagger(seed: int = 0, num_tags: int = len(TINY_TAGS)) -> RAMTagger:
    """A seeded random tiny tagger (LoRA B non-zero, so the LoRA path is exercised)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tagger = RAMTagger(
            TinyVisual(),
            vision_width=32,
            num_tags=num_tags,
            hidden=32,
            layers=1,
            heads=2,
            intermediate=64,
            lora_r=4,
        )
        with torch.no_grad():
            for name, p in tagger.named_parameters():
                if name == "label_embed" or "lora_B" in name:
                    p.normal_(0, 0.5)
    finally:
        torch.random.set_rng_state(state)
    return tagger.eval()


@functools.lru_cache(maxsize=4)
def _cached_tagger(seed: int) -> RAMTagger:
    return tiny_tagger(seed)


def build_tiny_dape(seed: int = 0, threshold: float = 0.68, device: str = "cpu") -> DAPEPrompts:
    thresholds = torch.full((len(TINY_TAGS),), float(threshold))
    return DAPEPrompts(_cached_tagger(seed), list(TINY_TAGS), thresholds, image_size=64, device=device)
