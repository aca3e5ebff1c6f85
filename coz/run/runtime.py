"""What every coz job sets up the same way: the device, the seeds, the CPU thread count and
the Hydra run folder."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from coz.errors import CozError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable CUDA device is a clear error."""
    import torch  # here, not at the top: a run's config is checked before torch loads (seconds)

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CozError(f"device={name}: CUDA is not available on this machine (use device=cpu or auto)")
    return device


def seed_everything(seed: int, workers: bool = False) -> None:
    """Seed python, numpy and torch; ``workers``: Lightning's ``seed_everything(workers=True)``,
    which also seeds each data-loader worker from (seed, worker, rank)."""
    if workers:
        import lightning as L

        L.seed_everything(seed, workers=True, verbose=False)
        return
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fixed_threads(threads: Any) -> int | None:
    """None for ``auto`` (share the cores with other coz processes), else the user's count."""
    if str(threads) == "auto":
        return None
    try:
        n = int(threads)
    except ValueError:
        n = 0
    if n < 1:
        raise CozError(f"threads={threads}: must be 'auto' or a whole number >= 1")
    return n


def hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def hydra_choices() -> dict[str, Any]:
    """The config-group options of this job (``{"backbone": "sd3", ...}``); {} outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
