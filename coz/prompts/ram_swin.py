"""RAM's image encoder: the original (Microsoft) Swin Transformer with SeeSR's LoRA on ``qkv``.

Module names are those of the Swin code RAM and SeeSR ship, so ``visual_encoder.*`` of
``ram_swin_large_14m.pth`` loads without renaming:
``patch_embed.proj|norm``, ``layers.S.blocks.B.norm1|attn.qkv|attn.proj|attn.relative_position_bias_table|
norm2|mlp.fc1|mlp.fc2``, ``layers.S.downsample.norm|reduction`` (at the END of stages 0-2), ``norm``.
There is no classification head and no absolute position embedding (``ape=False``).

The window-geometry buffers (``relative_position_index``, shifted blocks' ``attn_mask``) are
recomputed here and are not part of the state dict: RAM's own loader deletes them from the
checkpoint too. Blocks whose stage resolution is not larger than the window (Swin-L's last stage at
384 px: 12x12 tokens, window 12) use one window and no shift, as the reference does.

Output: (B, 1 + L, C) tokens: the average-pooled token first, then the final-normed tokens of the
last stage (RAM feeds them to ``image_proj``); for Swin-L at 384 px that is (B, 145, 1536).

The ``qkv`` of every block is a loralib ``MergedLinear`` twin (q and v adapted, rank 8, alpha 1):
``attn.qkv.lora_A`` (16, dim) and ``attn.qkv.lora_B`` (2 * dim, 8), DAPE's key layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from coz.prompts.lora_linear import LoRALinear

# RAM's config_swinL_384.json
SWIN_L_384 = dict(
    img_size=384, patch_size=4, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12
)
MASK_VALUE = -100.0  # what the reference puts between tokens of different shifted regions


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2 * window - 1)^2-row bias table, row-major offsets."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2), >= 0
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window^2, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def unpartition(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`partition`: (B * nW, window^2, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window^2, window^2): 0 within a region of the rolled map, MASK_VALUE across regions."""
    regions = torch.zeros(1, resolution, resolution, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in bounds for ws in bounds):
        regions[:, hs, ws, :] = i
    ids = partition(regions, window).squeeze(-1)  # (nW, N)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, lora_r: int = 8) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = LoRALinear(dim, 3 * dim, r=lora_r, lora_groups=(True, False, True))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B * nW, N, C); mask None or (nW, N, N) additive."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(bw // nw, 1, 1, 1)  # (B * nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # scale head_dim^-0.5
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention and MLP, both residual, on a square token map."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, lora_r: int) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the map: no partition, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads, lora_r)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        mask = shifted_window_mask(resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r, w, s = self.resolution, self.window, self.shift
        h = self.norm1(x).view(b, r, r, c)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        h = unpartition(self.attn(partition(h, w), self.attn_mask), w, r, r)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + h.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1) as (row, col)), norm, linear 4C -> 2C."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(
        self, dim: int, resolution: int, depth: int, heads: int, window: int, downsample: bool, lora_r: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, lora_r)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"Swin input is {tuple(x.shape[-2:])}, the model is built for {self.img_size}")
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Images (B, 3, S, S) -> (B, 1 + (S / patch / 2^(stages-1))^2, embed_dim * 2^(stages-1))."""

    def __init__(
        self,
        img_size: int = 384,
        patch_size: int = 4,
        embed_dim: int = 192,
        depths: tuple[int, ...] = (2, 2, 18, 2),
        num_heads: tuple[int, ...] = (6, 12, 24, 48),
        window_size: int = 12,
        lora_r: int = 8,
    ) -> None:
        super().__init__()
        stages = len(depths)
        resolution = img_size // patch_size
        if img_size % patch_size or resolution % 2 ** (stages - 1):
            raise ValueError(f"img_size {img_size} does not split into {stages} Swin stages")
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(
                embed_dim * 2**i,
                resolution // 2**i,
                depths[i],
                num_heads[i],
                window_size,
                downsample=i < stages - 1,
                lora_r=lora_r,
            )
            for i in range(stages)
        )
        self.num_features = embed_dim * 2 ** (stages - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)  # (B, L, C)
        return torch.cat([x.mean(1, keepdim=True), x], dim=1)


def swin_large_384(lora_r: int = 8) -> SwinTransformer:
    """RAM's Swin-L at 384 px (vision width 1536), with DAPE's LoRA slots on every ``qkv``."""
    return SwinTransformer(**SWIN_L_384, lora_r=lora_r)
