"""loralib-style LoRA on a Linear layer, as DAPE's Swin ``qkv`` and tagging head carry it."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Linear):
    """nn.Linear plus loralib-style ``lora_A`` (r, in) / ``lora_B`` (out, r), scaled by alpha / r.

    ``lora_groups`` = (True, False, True) is loralib's MergedLinear on a fused qkv: q and v get a
    low-rank update, k none; ``lora_A`` is then (r * 2, in) and ``lora_B`` (out / 3 * 2, r).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 8,
        alpha: float = 1.0,
        lora_groups: tuple[bool, ...] = (True,),
        bias: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.r, self.scaling, self.groups = r, alpha / r, lora_groups
        n = sum(lora_groups)
        part = out_features // len(lora_groups)
        self.lora_A = nn.Parameter(torch.zeros(r * n, in_features))
        self.lora_B = nn.Parameter(torch.zeros(part * n, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        n, part = sum(self.groups), self.out_features // len(self.groups)
        blocks = iter(
            [
                self.lora_B[i * part : (i + 1) * part] @ self.lora_A[i * self.r : (i + 1) * self.r]
                for i in range(n)
            ]
        )
        zeros = torch.zeros(part, self.in_features, dtype=self.weight.dtype, device=self.weight.device)
        return torch.cat([next(blocks) if on else zeros for on in self.groups]) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight + self.delta_weight(), self.bias)
