"""``trainer.*`` reaches ``lightning.Trainer``: the keys coz interprets itself (below) are read by
each tool; every other key is passed on as it is (``+trainer.max_time=00:02:00:00``,
``+trainer.limit_val_batches=0.5``) and wins over coz's own setting of the same argument."""

from __future__ import annotations

import inspect
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError

# Read by the tools (auto values resolved, strategies built); not passed on verbatim.
INTERPRETED = ("accelerator", "devices", "num_nodes", "strategy", "precision", "progress_bar")


def trainer_kwargs(trainer_cfg: DictConfig, **coz_args: Any) -> dict[str, Any]:
    """coz's Trainer arguments plus every other ``trainer.`` key; an unknown key is one line."""
    import lightning as L

    extra = {
        k: v for k, v in OmegaConf.to_container(trainer_cfg, resolve=True).items() if k not in INTERPRETED
    }
    accepted = inspect.signature(L.Trainer.__init__).parameters
    unknown = sorted(set(extra) - set(accepted))
    if unknown:
        raise CozError(f"trainer.{unknown[0]}: not an argument of lightning.Trainer")
    return {**coz_args, **extra}
