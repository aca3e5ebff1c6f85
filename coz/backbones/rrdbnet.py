"""RRDBNet, the generator of ESRGAN and Real-ESRGAN.

References:
- X. Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
  ECCV Workshops 2018 (residual-in-residual dense blocks, residual scaling).
- X. Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
  Synthetic Data", ICCV Workshops 2021 (the x4plus weights this module is used with).

Parameter names follow BasicSR's ``RRDBNet`` (``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so a BasicSR checkpoint
loads with ``load_state_dict`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
RESIDUAL_SCALE = 0.2


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=True)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input.

    conv_k sees the concatenation of the block input and every earlier conv's output, so its
    input width is ``num_feat + (k - 1) * num_grow_ch``. conv1-4 are followed by LeakyReLU(0.2),
    conv5 maps back to ``num_feat`` channels (ESRGAN, section 3.1 and figure 4).
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.num_grow_ch = num_grow_ch
        self.conv1 = _conv3x3(num_feat, num_grow_ch)
        self.conv2 = _conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv3x3(num_feat + 4 * num_grow_ch, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, F, H, W) -> (B, F, H, W), F = num_feat
        if torch.is_grad_enabled():
            return self._forward_cat(x)
        return self._forward_buffer(x)

    def _forward_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Autograd-friendly form: every concatenation is a fresh tensor."""
        x1 = F.leaky_relu(self.conv1(x), LRELU_SLOPE)  # (B, G, H, W)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), LRELU_SLOPE)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), LRELU_SLOPE)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), LRELU_SLOPE)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # (B, F, H, W)
        return torch.add(x, x5, alpha=RESIDUAL_SCALE)

    def _forward_buffer(self, x: torch.Tensor) -> torch.Tensor:
        """Inference form: the dense features live in one preallocated (B, F + 4G, H, W) buffer.

        Each conv reads a leading channel slice and its output is written once into the next
        slice, instead of re-concatenating (and so re-copying) the growing stack four times.
        Not usable under autograd: writing the buffer would invalidate slices saved for backward.
        """
        b, f, h, w = x.shape
        g = self.num_grow_ch
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        feats = torch.empty((b, f + 4 * g, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
        feats[:, :f].copy_(x)
        width = f
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            out = conv(feats[:, :width])  # (B, G, H, W)
            feats[:, width : width + g].copy_(F.leaky_relu_(out, LRELU_SLOPE))
            width += g
        x5 = self.conv5(feats)  # (B, F, H, W)
        return x5.mul_(RESIDUAL_SCALE).add_(x)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, then a 0.2-scaled skip (ESRGAN fig. 4)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, F, H, W) -> (B, F, H, W)
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        if torch.is_grad_enabled():
            return torch.add(x, out, alpha=RESIDUAL_SCALE)
        return out.mul_(RESIDUAL_SCALE).add_(x)


class RRDBNet(nn.Module):
    """The ESRGAN generator at scale 4: features -> 23 RRDBs -> two nearest-x2 upsamplings.

    ``forward`` maps (B, 3, h, w) RGB in [0, 1] to (B, 3, 4h, 4w), not clamped. The defaults
    are those of Real-ESRGAN x4plus (64 features, 23 blocks, growth 32).
    """

    scale = 4

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.conv_first = _conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1 = _conv3x3(num_feat, num_feat)
        self.conv_up2 = _conv3x3(num_feat, num_feat)
        self.conv_hr = _conv3x3(num_feat, num_feat)
        self.conv_last = _conv3x3(num_feat, num_out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, h, w)
        feat = self.conv_first(x)  # (B, F, h, w)
        body = self.conv_body(self.body(feat))  # (B, F, h, w)
        feat = body.add_(feat) if not torch.is_grad_enabled() else feat + body  # trunk skip
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")  # (B, F, 2h, 2w)
        feat = F.leaky_relu_(self.conv_up1(feat), LRELU_SLOPE)
        feat = F.interpolate(feat, scale_factor=2, mode="nearest")  # (B, F, 4h, 4w)
        feat = F.leaky_relu_(self.conv_up2(feat), LRELU_SLOPE)
        feat = F.leaky_relu_(self.conv_hr(feat), LRELU_SLOPE)
        return self.conv_last(feat)  # (B, 3, 4h, 4w)

    def conv_names(self) -> list[str]:
        """Every conv's state-dict prefix in forward order (the order of the ncnn graph)."""
        names = ["conv_first"]
        for i in range(self.num_block):
            names += [f"body.{i}.rdb{r}.conv{c}" for r in (1, 2, 3) for c in range(1, 6)]
        return [*names, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]

    @staticmethod
    def conv_activation(name: str) -> float | None:
        """LeakyReLU slope applied right after conv ``name``, or None for a linear conv."""
        last = name.rsplit(".", 1)[-1]
        if last in ("conv1", "conv2", "conv3", "conv4", "conv_up1", "conv_up2", "conv_hr"):
            return LRELU_SLOPE
        return None


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
