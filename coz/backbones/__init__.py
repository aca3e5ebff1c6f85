"""SR backbones, chosen by the ``backbone=`` config group. Each is built lazily: only the chosen
backbone's dependencies are imported."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from coz.backbones.base import Backbone

__all__ = ["Backbone", "build_backbone", "BACKBONES"]

BACKBONES = (
    "realesrgan",
    "span",
    "spandrel",
    "nearest",
    "bicubic",
    "sd3",
    "tiny_sd3",
    "sd21",
    "tiny_sd21",
    "s3diff",
    "tiny_s3diff",
)


def build_backbone(cfg: DictConfig, device: torch.device | str = "cpu") -> Backbone:
    """A built-in backbone by ``name``, or the user's with ``_target_`` (called with ``device=``)."""
    from coz.run.targets import has_target, instantiate_target

    if has_target(cfg):
        return instantiate_target(cfg, "backbone", device=device)
    name = str(cfg.name)
    if name in ("nearest", "bicubic"):
        from coz.backbones.interp import Interpolation

        return Interpolation(name)
    if name == "realesrgan":
        from coz.backbones.cnn.realesrgan import RealESRGAN

        return RealESRGAN.from_config(
            weights=str(cfg.weights),
            device=device,
            dtype=str(cfg.dtype),
            runtime=str(cfg.get("runtime", "auto")),
        )
    if name == "span":
        from coz.backbones.cnn.span import Span

        return Span.from_config(
            model=str(cfg.model),
            weights=str(cfg.weights),
            device=device,
            dtype=str(cfg.dtype),
            runtime=str(cfg.runtime),
        )
    if name == "spandrel":
        from coz.backbones.cnn.spandrel_model import SpandrelBackbone

        return SpandrelBackbone.from_config(
            weights=cfg.weights, scale=int(cfg.scale), device=device, dtype=str(cfg.dtype)
        )
    if name in ("sd3", "tiny_sd3"):
        from coz.backbones.diffusion.sd3 import OSEDiffSD3

        return OSEDiffSD3.from_config(cfg, device=device)
    if name in ("sd21", "tiny_sd21"):
        from coz.backbones.diffusion.sd21 import OSEDiffSD21

        return OSEDiffSD21.from_config(cfg, device=device)
    if name in ("s3diff", "tiny_s3diff"):
        from coz.backbones.diffusion.s3diff import S3Diff

        return S3Diff.from_config(cfg, device=device)
    raise ValueError(f"backbone={name}: unknown backbone (available: {', '.join(BACKBONES)})")
