"""S3Diff's degradation estimator (``de_net.pth``): scores how blurred and how noisy a LOW-RES image is.

The network (the authors' ``DEResNet``, docs/fidelity.md "Other backbones") has one branch per degradation
(two: blur, noise), each a BN-free ResNet ending in a small MLP and a sigmoid:

    x (B, 3, h, w) in [0, 1]                   the low-res image itself, not its upsampling
    conv_first[i]: 3 -> F0, 3x3                (B, F0, h, w)
    body[i]: per stage s, num_blocks[s] residual blocks (x + conv2(relu(conv1(x)))), then
             a 3x3 conv to the next width (stride 2 where downscales[s] == 2)   (B, F_last, h', w')
    global average pool                        (B, F_last)
    fc_degree[i]: Linear(F_last, 512), ReLU, Linear(512, 1), Sigmoid          (B,)
    scores = stack over i                      (B, 2) in (0, 1)

The released ``de_net.pth`` is a plain ``state_dict`` of this module with the defaults below
(widths 64, 64, 64, 128; two blocks per stage; stride 2 in the third stage); keys such as
``conv_first.0.weight``, ``body.1.6.weight``, ``body.0.7.conv1.bias``, ``fc_degree.1.2.weight``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from coz.errors import CozError
from coz.run.weights import mismatch, shapes

DEFAULT_FEATS = (64, 64, 64, 128)
DEFAULT_BLOCKS = (2, 2, 2, 2)
DEFAULT_DOWNSCALES = (1, 1, 2, 1)


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``, 3x3 convolutions, no normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class DegradationEstimator(nn.Module):
    """Blur and noise scores of a low-res image: (B, 3, h, w) in [0, 1] -> (B, 2) in (0, 1)."""

    def __init__(
        self,
        num_degradation: int = 2,
        num_feats: tuple[int, ...] = DEFAULT_FEATS,
        num_blocks: tuple[int, ...] = DEFAULT_BLOCKS,
        downscales: tuple[int, ...] = DEFAULT_DOWNSCALES,
        fc_hidden: int = 512,
    ) -> None:
        super().__init__()
        if not len(num_feats) == len(num_blocks) == len(downscales):
            raise ValueError("num_feats, num_blocks and downscales need one entry per stage")
        self.num_degradation = num_degradation
        self.conv_first = nn.ModuleList(nn.Conv2d(3, num_feats[0], 3, 1, 1) for _ in range(num_degradation))
        self.body = nn.ModuleList(
            self._branch(list(num_feats), list(num_blocks), list(downscales)) for _ in range(num_degradation)
        )
        self.fc_degree = nn.ModuleList(
            nn.Sequential(
                nn.Linear(num_feats[-1], fc_hidden), nn.ReLU(), nn.Linear(fc_hidden, 1), nn.Sigmoid()
            )
            for _ in range(num_degradation)
        )
        self.init_weights(0.1)

    @staticmethod
    def _branch(feats: list[int], blocks: list[int], downscales: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        last = len(feats) - 1
        for stage, (width, n, down) in enumerate(zip(feats, blocks, downscales, strict=True)):
            layers += [ResidualBlockNoBN(width) for _ in range(n)]
            following = feats[min(stage + 1, last)]
            if down == 2:
                layers.append(nn.Conv2d(width, following, 3, 2, 1))
            elif down != 1:
                raise ValueError(f"downscales: only 1 and 2 are supported, got {down}")
            elif stage < last and width != following:
                layers.append(nn.Conv2d(width, following, 3, 1, 1))
        return nn.Sequential(*layers)

    def init_weights(self, scale: float = 0.1) -> None:
        """Kaiming-normal weights times ``scale``, zero biases (the authors' initialisation: 0.1)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(scale)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = []
        for first, body, head in zip(self.conv_first, self.body, self.fc_degree, strict=True):
            feat = body(first(x)).mean(dim=(2, 3))  # (B, F_last): global average pool
            scores.append(head(feat).squeeze(-1))  # (B,)
        return torch.stack(scores, dim=1)  # (B, num_degradation)


def load_estimator_weights(estimator: DegradationEstimator, path: str | Path) -> None:
    """Load ``de_net.pth`` (a plain state dict) strictly; one CozError naming the file otherwise."""
    from coz.backbones.diffusion.lora_formats import load_torch_file

    path = Path(path)
    state = load_torch_file(path, "degradation estimator")
    if not isinstance(state, dict):
        raise CozError(
            f"degradation estimator {path}: expected a state dict (S3Diff's de_net.pth), "
            f"got {type(state).__name__}"
        )
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        hint = " (that is an s3diff.pkl)" if "rank_unet" in state else ""
        raise CozError(
            f"degradation estimator {path}: not a state dict of tensors: {odd!r} holds a "
            f"{type(state[odd]).__name__}{hint}; expected S3Diff's de_net.pth"
        )
    if problem := mismatch(shapes(estimator.state_dict()), state, show=3):
        raise CozError(
            f"degradation estimator {path}: keys do not match S3Diff's DEResNet: {problem} "
            "(another estimator size?)"
        )
    estimator.load_state_dict(state, strict=True)
