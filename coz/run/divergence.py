"""Training stops at the first non-finite loss or weight.

:func:`check_training` runs after each step's losses and after each optimiser step of
``coz.train_sr`` and ``coz.train_grpo``: the first non-finite value stops the run with one line
naming the step, the loss term or weight, and the last finite checkpoint (which stays on disk:
checkpoints are only ever written from finite weights, :mod:`coz.run.finite`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from coz.errors import TrainingDiverged
from coz.run.checkpoint_files import newest_checkpoint
from coz.run.finite import first_nonfinite


def check_training(tool: str, step: int, what: str, tensors: Mapping[str, object], checkpoints: Path) -> None:
    """Raise :class:`TrainingDiverged` if one of ``tensors`` (``what``: "loss term" or "weight") is
    not finite at optimisation ``step`` (1-based)."""
    name = first_nonfinite(tensors)
    if name is None:
        return
    value = tensors[name]
    shown = f" is {float(value.detach().float().reshape(-1)[0])}" if value.numel() == 1 else " holds NaN/Inf"
    last = newest_checkpoint(checkpoints) if Path(checkpoints).is_dir() else None
    kept = f"the last finite checkpoint is {last}" if last else "no checkpoint was written"
    raise TrainingDiverged(
        f"coz.{tool}: step {step}: {what} {name}{shown}; training stopped, {kept} "
        "(rerun with a lower optim.lr: it resumes from there)"
    )
