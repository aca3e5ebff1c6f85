"""The rules of coz.zoom's and coz.evaluate's config that join several keys: the chain's geometry
with this backbone. Each key's own type, range and choices are its schema's (:mod:`coz.zoom.schema`,
applied by :func:`coz.run.schema.typed` before these run). Each refusal is one line naming the key,
the value and what is allowed (``zoom.factor=3: must divide zoom.size=64``).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError

# backbones without a diffusion model: any size their scale divides
_CNN_OR_INTERPOLATION = ("realesrgan", "span", "spandrel", "nearest", "bicubic")
DIFFUSION_SIZE_MULTIPLE = 64  # the VAE's 8x and the transformer's 2x patches, with the 4x LR crop


def check_chain(cfg: DictConfig) -> None:
    """The chain's geometry (steps, factor and size together, and with this backbone), for coz.zoom
    and coz.evaluate; ``cfg`` is typed."""
    from coz.modes import INTERPOLATION_MODES  # torch-free: a refusal comes before torch loads

    mode, steps, factor, size = cfg.zoom.mode, cfg.zoom.steps, cfg.zoom.factor, cfg.zoom.size
    if mode == "full":
        return  # full-image settings: coz.full_image.FullImageOptions checks them
    if size % factor:
        raise CozError(f"zoom.factor={factor}: must divide zoom.size={size} (every step crops 1/factor)")
    if mode in ("onestep", *INTERPOLATION_MODES) and size // factor**steps < 1:
        raise CozError(
            f"zoom.steps={steps}: a {size}-px image has no center 1/{factor**steps} to zoom into "
            f"(use at most {_max_steps(size, factor)} steps, or a larger zoom.size)"
        )
    if mode in INTERPOLATION_MODES or cfg.backbone is None:
        return
    backbone = OmegaConf.select(cfg, "backbone.name")  # None: a user's own (_target_) backbone
    multiple = 4 if backbone in _CNN_OR_INTERPOLATION else DIFFUSION_SIZE_MULTIPLE
    if size % multiple:
        raise CozError(f"zoom.size={size}: must be a multiple of {multiple} with backbone={backbone}")


def check_zoom(cfg: DictConfig) -> None:
    """coz.zoom's rules beyond its schema, before it reads an image or loads a model: an input, and
    the chain's geometry."""
    if OmegaConf.is_missing(cfg, "input") or cfg.input in (None, ""):
        raise CozError("input is missing: give input=IMAGE_OR_FOLDER (a file or a folder of images)")
    check_chain(cfg)


def _max_steps(size: int, factor: int) -> int:
    steps = 0
    while size // factor ** (steps + 1) >= 1:
        steps += 1
    return steps
