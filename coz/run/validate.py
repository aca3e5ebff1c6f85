"""Config checks that run before any model loads, in one place for every tool.

Each check reads one key and fails with one line naming the key, the value and what is allowed
(``zoom.steps=-1: must be a whole number >= 1``). :func:`check_zoom` covers coz.zoom;
:func:`check_chain` is shared with coz.evaluate; the training tools check their own keys
(``coz.train_sr.tool.check_config``, ``coz.train_grpo.tool.check_config``) and the shared ones (seed, threads)
with these helpers.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError

# backbones without a diffusion model: any size their scale divides
_CNN_OR_INTERPOLATION = ("realesrgan", "span", "spandrel", "nearest", "bicubic")
DIFFUSION_SIZE_MULTIPLE = 64  # the VAE's 8x and the transformer's 2x patches, with the 4x LR crop


def value(cfg: DictConfig, key: str) -> Any:
    """The value at dotted ``key`` (None when absent); a ``???`` left unset is refused by name."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node and OmegaConf.is_missing(node, leaf):
        raise CozError(f"{key} is missing: give {key}=...")
    return OmegaConf.select(cfg, key, default=None)


def required(cfg: DictConfig, key: str, hint: str) -> Any:
    """A value the user must give (``???`` in the config)."""
    try:
        found = value(cfg, key)
    except CozError:
        found = None
    if found is None:
        raise CozError(f"{key} is missing: {hint}")
    return found


def whole(
    cfg: DictConfig, key: str, minimum: int | None = None, maximum: int | None = None, null: bool = False
) -> int | None:
    """A whole number within bounds (``null: True`` also allows null)."""
    raw = value(cfg, key)
    if raw is None and null:
        return None
    if minimum is not None and maximum is not None:
        allowed = f"a whole number from {minimum} to {maximum}"
    else:
        allowed = "a whole number" + (f" >= {minimum}" if minimum is not None else "")
        allowed += f" <= {maximum}" if maximum is not None else ""
    allowed += " (or null)" if null else ""
    try:
        if isinstance(raw, bool) or raw is None:
            raise ValueError
        number = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
        if number is None:
            raise ValueError
    except (TypeError, ValueError):
        raise CozError(f"{key}={raw}: must be {allowed}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise CozError(f"{key}={raw}: must be {allowed}")
    return number


def choice(cfg: DictConfig, key: str, options: tuple[str, ...]) -> str:
    raw = value(cfg, key)
    if str(raw) not in options:
        raise CozError(f"{key}={raw}: use one of {', '.join(options)}")
    return str(raw)


def flag(cfg: DictConfig, key: str) -> bool:
    raw = value(cfg, key)
    if not isinstance(raw, bool):
        raise CozError(f"{key}={raw}: must be true or false")
    return raw


def device(cfg: DictConfig, key: str = "device") -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``...: whatever torch can name."""
    raw = str(value(cfg, key))
    if raw == "auto":
        return raw
    import torch

    try:
        torch.device(raw)
    except (RuntimeError, ValueError):
        raise CozError(f"{key}={raw}: use auto, cpu, cuda or cuda:N") from None
    return raw


def threads(cfg: DictConfig, key: str = "threads") -> None:
    from coz.run.runtime import fixed_threads

    fixed_threads(value(cfg, key))


def check_chain(cfg: DictConfig) -> None:
    """What coz.zoom and coz.evaluate share: seed, device, threads, images, and the chain's geometry."""
    from coz.chain import INTERPOLATION_MODES, MODES

    whole(cfg, "seed", minimum=0)
    device(cfg)
    threads(cfg)
    whole(cfg, "batch_size", minimum=1)
    choice(cfg, "alpha", ("white", "drop"))
    whole(cfg, "max_pixels", minimum=1, null=True)
    mode = choice(cfg, "zoom.mode", tuple(MODES))
    steps = whole(cfg, "zoom.steps", minimum=1)
    factor = whole(cfg, "zoom.factor", minimum=2)
    size = whole(cfg, "zoom.size", minimum=1)
    if mode == "full":
        return  # full-image settings: coz.full_image.FullImageOptions checks them
    if size % factor:
        raise CozError(f"zoom.factor={factor}: must divide zoom.size={size} (every step crops 1/factor)")
    if mode in ("onestep", *INTERPOLATION_MODES) and size // factor**steps < 1:
        raise CozError(
            f"zoom.steps={steps}: a {size}-px image has no center 1/{factor**steps} to zoom into "
            f"(use at most {_max_steps(size, factor)} steps, or a larger zoom.size)"
        )
    if mode in INTERPOLATION_MODES or cfg.get("backbone") is None:
        return
    backbone = str(value(cfg, "backbone.name"))
    multiple = 4 if backbone in _CNN_OR_INTERPOLATION else DIFFUSION_SIZE_MULTIPLE
    if size % multiple:
        raise CozError(f"zoom.size={size}: must be a multiple of {multiple} with backbone={backbone}")


def check_zoom(cfg: DictConfig) -> None:
    """Every value coz.zoom reads, before it reads an image or loads a model."""
    required(cfg, "input", "give input=IMAGE_OR_FOLDER (a file or a folder of images)")
    check_chain(cfg)
    for key in ("save.strip", "save.gif", "save.per_scale"):
        flag(cfg, key)
    whole(cfg, "save.gif_size", minimum=16)
    from coz.run.wandb_run import LOGGERS

    choice(cfg, "logger.name", tuple(LOGGERS))


def _max_steps(size: int, factor: int) -> int:
    steps = 0
    while size // factor ** (steps + 1) >= 1:
        steps += 1
    return steps
