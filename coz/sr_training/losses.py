"""Reconstruction losses of the generator (OSEDiff: L2 x1 + LPIPS(VGG) x2), on images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coz.errors import CozError


def l2_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.float(), target.float())


class LPIPSLoss(nn.Module):
    """LPIPS with the VGG trunk (Zhang et al., CVPR 2018), frozen; inputs in [-1, 1].

    The weights are not part of coz: torchvision's ImageNet VGG-16 (torch hub cache) and the LPIPS
    linear layers (``pretrained_path``, or downloaded by pyiqa). Without them -- offline, no hub --
    building it fails with one line saying so; ``loss.lpips=0`` trains without the term.
    """

    def __init__(self, pretrained_path: str | None = None) -> None:
        super().__init__()
        try:
            from pyiqa.archs.lpips_arch import LPIPS

            self.net = LPIPS(net="vgg", version="0.1", pretrained=True, pretrained_model_path=pretrained_path)
        except Exception as e:  # downloads fail with URLError, OSError, HTTPError, RuntimeError...
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise CozError(
                "loss.lpips > 0 needs LPIPS(VGG)'s weights (torchvision's VGG-16 and the LPIPS linear "
                f"layers), which could not be loaded ({type(e).__name__}: {reason}); put them in the "
                "torch hub cache (or set loss.lpips_weights=PATH for the linear layers) or set loss.lpips=0"
            ) from None
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # always frozen, always in eval mode
        return super().train(False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(output.float(), target.float(), normalize=False).mean()
