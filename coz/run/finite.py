"""NaN and Inf: training stops at the first non-finite loss or weight, and no file holding one is
written or loaded (a NaN LoRA zooms every photo to black without a word).

:func:`check_training` runs after each step's losses and after each optimiser step of
``coz.train_sr`` and ``coz.train_grpo``: the first non-finite value stops the run with one line
naming the step, the loss term or weight, and the last finite checkpoint (which stays on disk:
checkpoints are only ever written from finite weights). :func:`first_nonfinite` is the one test,
also used by the checkpoint writer and the weight loaders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from coz.errors import TrainingDiverged


def first_nonfinite(tensors: Mapping[str, object] | Iterable[tuple[str, object]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an Inf, else None."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, value in items:
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value.detach()).all())
        ):
            return str(name)
    return None


def check_training(tool: str, step: int, what: str, tensors: Mapping[str, object], checkpoints: Path) -> None:
    """Raise :class:`TrainingDiverged` if one of ``tensors`` (``what``: "loss term" or "weight") is
    not finite at optimisation ``step`` (1-based)."""
    name = first_nonfinite(tensors)
    if name is None:
        return
    from coz.run.checkpoints import newest_checkpoint

    value = tensors[name]
    shown = f" is {float(value.detach().float().reshape(-1)[0])}" if value.numel() == 1 else " holds NaN/Inf"
    last = newest_checkpoint(checkpoints) if Path(checkpoints).is_dir() else None
    kept = f"the last finite checkpoint is {last}" if last else "no checkpoint was written"
    raise TrainingDiverged(
        f"coz.{tool}: step {step}: {what} {name}{shown}; training stopped, {kept} "
        "(rerun with a lower optim.lr: it resumes from there)"
    )
