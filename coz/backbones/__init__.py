"""SR backbones, chosen by the ``backbone=`` config group. Each is built lazily: only the chosen
backbone's dependencies are imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:  # torch-free: a tool checks its config (coz.backbones.schema) before torch loads
    import torch

    from coz.backbones.base import Backbone

__all__ = ["build_backbone", "BACKBONES"]  # the interface: coz.backbones.base.Backbone

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
# built here too, without a config file: coz.train_sr's test twins of the CPU recipe
TINY_CNN = ("tiny_realesrgan", "tiny_span")


def check_backbone_files(cfg: DictConfig) -> None:
    """What loading a diffusion backbone checks first, without loading anything: its weight files
    named and on disk, and its base model in a folder, in the cache or on a hub that answers. coz.zoom
    calls it in its ``check``, so a missing one is refused before the run folder is made."""
    from coz.run.targets import has_target

    name = str(cfg.get("name", ""))
    if has_target(cfg) or name.removeprefix("tiny_") not in ("sd3", "sd21", "s3diff"):
        return
    from importlib import import_module

    import_module(f"coz.backbones.diffusion.{name.removeprefix('tiny_')}")._weight_files(cfg)
    if not name.startswith("tiny_"):  # the twins are built from configs, offline
        from coz.backbones.diffusion.hub import resolve_model

        resolve_model(str(cfg.model), "backbone.model")


def build_backbone(
    cfg: DictConfig, device: torch.device | str = "cpu", *, trainable: bool = False
) -> Backbone:
    """A built-in backbone by ``name``, or the user's with ``_target_`` (called with ``device=``).

    ``trainable``: the backbone as ``coz.train_sr`` trains it (:mod:`coz.train_sr.generators` wraps
    it): what trains requires grad, no colour fix, a diffusion model without weights starts from a
    fresh LoRA, a CNN runs PyTorch in float32 (NCHW) so its parameters are the ones trained.
    """
    from coz.run.targets import has_target, instantiate_target

    if has_target(cfg):
        return instantiate_target(cfg, "backbone", device=device)
    name = cfg.name
    if name in ("nearest", "bicubic"):
        from coz.backbones.interp import Interpolation

        return Interpolation(name)
    # a trained CNN: PyTorch, float32, contiguous (no ncnn mirror, no channels_last copy)
    cnn = dict(dtype="float32", runtime="torch", channels_last=False) if trainable else {}
    if name == "realesrgan":
        from coz.backbones.cnn.realesrgan import RealESRGAN

        return RealESRGAN.from_config(
            weights=cfg.weights, device=device, **(cnn or {"dtype": cfg.dtype, "runtime": cfg.runtime})
        )
    if name == "span":
        from coz.backbones.cnn.span import Span

        return Span.from_config(
            model=cfg.model,
            weights=cfg.weights,
            device=device,
            **(cnn or {"dtype": cfg.dtype, "runtime": cfg.runtime}),
        )
    if name == "tiny_realesrgan":
        from coz.backbones.cnn.realesrgan import RealESRGAN
        from coz.backbones.cnn.rrdbnet import GROWTH

        return RealESRGAN.tiny(
            model_seed=cfg.get("model_seed", 0),
            num_feat=cfg.num_feat,
            num_block=cfg.num_block,
            num_grow_ch=cfg.get("num_grow_ch", GROWTH),
            device=device,
            **cnn,
        )
    if name == "tiny_span":
        from coz.backbones.cnn.span import Span

        return Span.tiny(
            model_seed=cfg.get("model_seed", 0),
            num_feat=cfg.get("num_feat", 8),
            device=device,
            **cnn,
        )
    if name == "spandrel":
        from coz.backbones.cnn.spandrel_model import SpandrelBackbone

        return SpandrelBackbone.from_config(
            weights=cfg.weights, scale=cfg.scale, device=device, dtype=cfg.dtype
        )
    if name in ("sd3", "tiny_sd3"):
        from coz.backbones.diffusion.sd3 import OSEDiffSD3

        return OSEDiffSD3.from_config(cfg, device=device, trainable=trainable)
    if name in ("sd21", "tiny_sd21"):
        from coz.backbones.diffusion.sd21 import OSEDiffSD21

        return OSEDiffSD21.from_config(cfg, device=device, trainable=trainable)
    if name in ("s3diff", "tiny_s3diff"):
        from coz.backbones.diffusion.s3diff import S3Diff

        return S3Diff.from_config(cfg, device=device)
    raise ValueError(f"backbone={name}: unknown backbone (available: {', '.join((*BACKBONES, *TINY_CNN))})")
