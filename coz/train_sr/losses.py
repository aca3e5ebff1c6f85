"""Reconstruction losses of the generator (OSEDiff: L2 x1 + LPIPS(VGG) x2), on images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coz.errors import CozError

# pyiqa's name of LPIPS v0.1 on the VGG-16 trunk (OSEDiff's perceptual loss); lower is better
LPIPS_METRIC = "lpips-vgg"


def l2_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output.float(), target.float())


class LPIPSLoss(nn.Module):
    """LPIPS with the VGG trunk (Zhang et al., CVPR 2018), frozen; inputs in [-1, 1].

    Built with pyiqa's ``create_metric(..., as_loss=True)``: gradients flow to the images, the mean over
    the batch is the loss. The weights are not part of coz: torchvision's ImageNet VGG-16 (torch hub
    cache) and the LPIPS linear layers (``pretrained_path``, or downloaded by pyiqa). Without them --
    offline, no hub -- building it fails with one line saying so; ``loss.lpips=0`` trains without the term.
    """

    def __init__(self, pretrained_path: str | None = None) -> None:
        super().__init__()
        try:
            import pyiqa

            # on the device of the surrounding init context (Lightning's configure_model), so that the
            # metric's device marker is a registered parameter and follows the module's later moves
            self.metric = pyiqa.create_metric(
                LPIPS_METRIC,
                as_loss=True,
                device=torch.get_default_device(),
                pretrained_model_path=pretrained_path,
            )
        except Exception as e:  # downloads fail with URLError, OSError, HTTPError, RuntimeError...
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise CozError(
                "loss.lpips > 0 needs LPIPS(VGG)'s weights (torchvision's VGG-16 and the LPIPS linear "
                f"layers), which could not be loaded ({type(e).__name__}: {reason}); put them in the "
                "torch hub cache (or set loss.lpips_weights=PATH for the linear layers) or set loss.lpips=0"
            ) from None
        self.metric.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # always frozen, always in eval mode
        return super().train(False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # normalize=False: the images are already in LPIPS's own [-1, 1] range
        return self.metric(output.float(), target.float(), normalize=False)
