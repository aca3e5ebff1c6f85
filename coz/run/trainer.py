"""The one Lightning ``Trainer`` of coz's tools, with one rule for ``trainer.devices`` and
``trainer.strategy``.

``trainer.*`` reaches ``lightning.Trainer``: the keys coz interprets itself (:data:`INTERPRETED`) are
resolved here; every other key is passed on as it is (``+trainer.max_time=00:02:00:00``,
``+trainer.limit_val_batches=0.5``) and wins over the tool's own setting of the same argument, except
the counts coz keeps itself (:data:`COUNTED_BY_COZ`: ``max_steps``, ``max_epochs``), which are refused.

- ``devices=auto``: every GPU when there are GPUs (and not ``accelerator=cpu``), else one process.
- ``strategy=auto``: one process: Lightning's own; several on one node: DDP in spawned workers (one
  Hydra job keeps one run folder); several nodes: DDP with the processes the cluster starts (SLURM).
  DDP tolerates parameters without a gradient (train_sr's regulariser LoRA where its loss weight is 0).
"""

from __future__ import annotations

import inspect
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError

# Read here or by the tools (auto values resolved, strategies built); not passed on verbatim.
INTERPRETED = ("accelerator", "devices", "num_nodes", "strategy", "precision", "progress_bar")
# Lightning's counts that coz's steps replace: Lightning counts every optimiser's step (train_sr's
# SD3 generator has three), so +trainer.max_steps=3 ended a run after one step and called it done.
COUNTED_BY_COZ = {
    "max_steps": "set the steps with stages=[...] (train_sr) or grpo.steps= (train_grpo)",
    "max_epochs": "set the steps with stages=[...] (train_sr) or grpo.steps= (train_grpo)",
}


def device_count(accelerator: str, devices: int | str) -> int:
    """``trainer.devices`` as a number of processes on this node."""
    if devices != "auto":
        return int(devices)
    import torch

    return torch.cuda.device_count() if accelerator != "cpu" and torch.cuda.is_available() else 1


def strategy(name: str, devices: int, num_nodes: int):
    """``trainer.strategy``, with ``auto`` as the module docstring says."""
    if name == "auto" and (devices > 1 or num_nodes > 1):
        name = "ddp_spawn" if num_nodes == 1 else "ddp"
    if name in ("ddp", "ddp_spawn"):
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(
            start_method="spawn" if name == "ddp_spawn" else "popen", find_unused_parameters=True
        )
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(state_dict_type="full", use_orig_params=True)
    return name


def build_trainer(trainer_cfg: DictConfig, **tool_args: Any):
    """A ``lightning.Trainer`` for ``trainer_cfg`` (the ``trainer`` node) and the tool's own arguments."""
    import lightning as L

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no tips
    accelerator = str(trainer_cfg.accelerator)
    devices = device_count(accelerator, trainer_cfg.devices)
    num_nodes = int(trainer_cfg.num_nodes)
    args = {
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": strategy(str(trainer_cfg.strategy), devices, num_nodes),
        **tool_args,
    }
    return L.Trainer(**trainer_kwargs(trainer_cfg, **args))


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
    if counted := sorted(set(extra) & set(COUNTED_BY_COZ)):
        raise CozError(f"trainer.{counted[0]}: coz counts the training itself; {COUNTED_BY_COZ[counted[0]]}")
    return {**coz_args, **extra}


@contextmanager
def ctrl_c_stays_an_interrupt() -> Iterator[None]:
    """Around ``trainer.fit`` / ``predict``: Lightning turns Ctrl-C into ``sys.exit(1)`` after its own
    teardown, and 1 means "done, some inputs skipped" in coz's exit codes. It becomes the
    KeyboardInterrupt it was again, so the tool says "interrupted, rerun to resume" and exits 130."""
    try:
        yield
    except SystemExit as stop:
        if stop.code != 1 or not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        if threading.current_thread() is threading.main_thread():  # Lightning ignores Ctrl-C from then on
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None


def follow_the_configured_lr(trainer: Any, lr: float) -> None:
    """From a module's ``on_train_start``: after a resume Lightning has restored each optimiser's
    learning rate, and its scheduler's base, from the checkpoint. ``optim.lr`` may change on a resume
    (lower, after a divergence: :mod:`coz.run.divergence`), so it replaces them, keeping the schedule's
    factor at this step (a warm-up's fraction). A fresh start is unchanged."""
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        for i, group in enumerate(scheduler.optimizer.param_groups):
            base = scheduler.base_lrs[i]
            factor = group["lr"] / base if base else 1.0
            scheduler.base_lrs[i] = group["initial_lr"] = float(lr)
            group["lr"] = float(lr) * factor
