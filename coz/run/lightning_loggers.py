"""``logger=csv|wandb|both|none`` for a tool whose loop is Lightning's: the one adapter from coz's
``logger`` config group to Lightning's loggers (the Trainer is :mod:`coz.run.trainer`'s).

csv: ``<run>/logs/metrics.csv`` (a resume writes ``logs-resumed-N/``: never overwrite); wandb: the run
of :mod:`coz.run.wandb_run` (offline unless WANDB_MODE says otherwise; a resume continues the same W&B
run); both: the two; none: ``False`` (Lightning's "no logger").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def lightning_loggers(
    logger_cfg: DictConfig,
    run_dir: Path,
    tool: str,
    config: dict[str, Any],
    resumed: bool = False,
    csv: bool = True,
) -> list[Any] | bool:
    """The Lightning loggers of ``logger_cfg`` for a run of ``tool`` (its resolved ``config`` goes to
    W&B) in ``run_dir``, or False for none; ``resumed``: the run continues from a checkpoint;
    ``csv=False``: the tool writes its CSV files itself (train_grpo), whatever the logger."""
    from coz.run.wandb_run import logger_kinds, wandb_init_args

    kinds = logger_kinds(logger_cfg)
    loggers: list[Any] = []
    if "csv" in kinds and csv:
        from lightning.pytorch.loggers import CSVLogger

        version = "logs"
        if resumed:
            version = f"logs-resumed-{len(list(run_dir.glob('logs-resumed-*'))) + 1}"
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=version))
    if "wandb" in kinds:
        from lightning.pytorch.loggers import WandbLogger

        args = wandb_init_args(logger_cfg, run_dir, tool, config)
        # WandbLogger(offline=True) alone asks for a key: the mode goes through the environment
        os.environ.setdefault("WANDB_MODE", args.pop("mode"))
        loggers.append(WandbLogger(save_dir=args.pop("dir"), **args))
    return loggers or False


def run_loggers(run, csv: bool = True) -> list[Any] | bool:
    """A Lightning tool's ``logger`` (its declaration's): :func:`lightning_loggers` of the run."""
    resumed = run.checkpoint is not None
    return lightning_loggers(run.cfg.logger, run.dir, run.tool.name, run.config, resumed, csv)


def wandb_experiment(trainer):
    """The W&B run of the trainer's W&B logger (opened on first use; rank 0 only), or None: for a
    module that logs tables and pictures itself."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None


def finish_wandb(trainer) -> None:
    """Close the trainer's W&B run (Lightning leaves it open): a later run in the same process, such
    as a resume from Python, must start its own, and an offline run file is complete once it returns."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
