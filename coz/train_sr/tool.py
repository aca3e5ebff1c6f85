"""``python -m coz.train_sr``: train an OSEDiff-style SR backbone, coarse-to-fine (paper 4.1, B.3).

``backbone=sd3`` (the paper's), ``sd21``, their offline twins ``tiny_sd3`` / ``tiny_sd21``, or
``realesrgan`` (the CNN recipe: full fine-tuning of the embedded Real-ESRGAN, CPU-friendly). Data,
degradation, stages, losses and optimisers follow docs/fidelity.md "Training the SR backbone"; see
``conf/train_sr/train_sr.yaml``. A run folder holds ``run.json``, ``train_sr.log``, ``checkpoints/``
(safetensors, ``last.safetensors``: :mod:`coz.run.checkpoints`), ``images/`` (LR / SR / HR grids),
the logger's files and ``export/`` (the final weights in coz.zoom's formats). Rerunning a command into its run
folder (``hydra.run.dir=``) resumes it exactly from its newest checkpoint (``resume=``: :func:`coz.run.checkpoints.resume_from`;
longer ``stages``: trains on).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError
from coz.run.cli import hydra_entry
from coz.run.folder import claim, is_main_process, record_attempt
from coz.run.resume import check_resume, read_record
from coz.run.runtime import fixed_threads, hydra_choices, hydra_run_dir
from coz.run.schema import typed
from coz.train_sr.schema import TrainSR

log = logging.getLogger("coz.train_sr")


def run(cfg: DictConfig, run_dir: Path | str | None = None) -> dict[str, Any]:
    """Train into ``run_dir`` (the Hydra run folder by default); returns what was written."""
    run_dir = Path(run_dir or hydra_run_dir())
    cfg = check_config(cfg)  # typed and checked: every key, before any model loads or a file is written
    with claim(run_dir, "train_sr"):  # one process per folder, from before the first write
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from coz.run.checkpoints import resume_from

    checkpoint = resume_from(cfg.resume, run_dir, "coz.train_sr", str(cfg.backbone.name))
    ckpt_path = None if checkpoint is None else str(checkpoint)
    if ckpt_path is not None and is_main_process():
        earlier = read_record(run_dir / "run.json")
        config = OmegaConf.to_container(cfg, resolve=True)
        check_resume(earlier and earlier.get("config"), config, "train_sr", run_dir)
    record_attempt(run_dir, cfg)
    import lightning as L

    # python, numpy and torch, and each loader worker from (seed, worker, rank); the module reseeds
    # every step from (seed, step, micro-batch, rank) anyway, so a resumed run stays exact
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    threads = fixed_threads(cfg.threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    _write_run_json(run_dir, cfg, ckpt_path)
    trainer, module = build(cfg, run_dir, resumed=ckpt_path is not None)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=".*(does not have many workers|num_workers|resuming from a checkpoint that ended).*",
        )
        warnings.filterwarnings("ignore", message=".*is not resumable.*")
        warnings.filterwarnings(
            "ignore", message=".*module\\(s\\) in eval mode.*"
        )  # the frozen base, on purpose
        try:
            trainer.fit(module, ckpt_path=ckpt_path)
        finally:
            _finish_wandb(trainer)
    export = run_dir / "export" / "export.json"
    record = {"run_dir": str(run_dir), "checkpoints": str(run_dir / "checkpoints")}
    if export.is_file():
        record["export"] = json.loads(export.read_text())
        from coz.train_sr.export import zoom_command

        files = {k: Path(v) for k, v in record["export"]["files"].items()}
        print(f"coz.train_sr: exported weights in {export.parent}")
        print(f"coz.train_sr: use them with: {zoom_command(cfg.backbone.name, files)}")
    print(f"coz.train_sr: run folder {run_dir}")
    return record


def _finish_wandb(trainer) -> None:
    """Close this run's W&B run (Lightning leaves it open): a later run in the same process, such as a
    resume from Python, must start its own, and an offline run file is complete once it returns."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


def check_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` typed (coz/train_sr/schema.py: every key's type and range), then the rules that read
    several keys or the disk, in one line each, before any model loads or a file is written."""
    from coz.train_sr.data import list_source
    from coz.train_sr.generators import GENERATORS
    from coz.train_sr.schema import check_trainer

    cfg = typed(TrainSR, cfg)
    check_trainer(cfg.trainer)
    if cfg.val.source:
        list_source(cfg.val.source)  # a missing or empty source is one line now, not after loading
    name = cfg.backbone.get("name")  # a config with _target_ passes the schema, but has no generator
    if name not in GENERATORS:
        raise CozError(f"backbone={name}: coz.train_sr trains {', '.join(GENERATORS)}")
    for stage in ("first", "second"):
        kernel = cfg.degradation[stage].kernel
        if len(kernel.kernel_prob) != len(kernel.kernel_list):
            raise CozError(
                f"degradation.{stage}.kernel.kernel_prob={list(kernel.kernel_prob)}: must give one "
                f"probability per kernel of kernel_list ({len(kernel.kernel_list)})"
            )
    return cfg


def build(cfg: DictConfig, run_dir: Path, resumed: bool = False):
    """The Lightning trainer and module of a run (tests drive them directly)."""
    import torch

    from coz.run.checkpoints import SafetensorsCheckpointIO, StepCheckpoint
    from coz.run.trainer import build_trainer
    from coz.train_sr.export import FinalExport
    from coz.train_sr.module import SRTrainingModule

    t = cfg.trainer
    accelerator = str(t.accelerator)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = str(t.precision)
    if precision == "auto":
        precision = "16-mixed" if on_gpu else "32-true"  # fp16 on GPUs for speed (the release: fp32)
    trainer = build_trainer(
        t,
        precision=precision,
        max_epochs=1,
        max_steps=-1,
        logger=_logger(cfg, run_dir, resumed),
        callbacks=[
            StepCheckpoint(
                run_dir / "checkpoints", int(cfg.checkpoint.every_n_steps), int(cfg.checkpoint.keep)
            ),
            FinalExport(),
        ],
        plugins=[SafetensorsCheckpointIO()],
        enable_checkpointing=True,  # StepCheckpoint, a ModelCheckpoint (Lightning adds no other)
        enable_model_summary=False,
        enable_progress_bar=False,  # the module draws its own (log.progress_bar): steps, not epochs
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # the sampler shards by itself (coz/train_sr/data.py)
        deterministic=bool(cfg.get("deterministic", False)),
    )
    return trainer, SRTrainingModule(cfg, run_dir)


def _logger(cfg: DictConfig, run_dir: Path, resumed: bool = False):
    """csv: ``logs/metrics.csv`` (a resume writes ``logs-resumed-N/``: never overwrite); wandb: the run
    of :mod:`coz.run.wandb_run` (offline unless WANDB_MODE says otherwise; a resume continues the same W&B
    run); both: the two."""
    from coz.run.wandb_run import logger_kinds, wandb_init_args

    kinds = logger_kinds(cfg.logger)
    loggers = []
    if "csv" in kinds:
        from lightning.pytorch.loggers import CSVLogger

        version = "logs"
        if resumed:
            version = f"logs-resumed-{len(list(run_dir.glob('logs-resumed-*'))) + 1}"
        loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=version))
    if "wandb" in kinds:
        from lightning.pytorch.loggers import WandbLogger

        args = wandb_init_args(cfg.logger, run_dir, "train_sr", OmegaConf.to_container(cfg, resolve=True))
        os.environ.setdefault(
            "WANDB_MODE", args.pop("mode")
        )  # WandbLogger(offline=True) alone asks for a key
        loggers.append(WandbLogger(save_dir=args.pop("dir"), **args))
    return loggers or False


def _write_run_json(run_dir: Path, cfg: DictConfig, ckpt_path: str | None) -> None:
    from coz.run.runinfo import machine, versions, write_run_json

    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "tool": "coz.train_sr",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "choices": hydra_choices(),
        "resumed_from": ckpt_path,
        "versions": versions(),
        "machine": machine(),
    }
    from lightning.pytorch.utilities import rank_zero_only

    if ckpt_path and rank_zero_only.rank != 0:  # DDP's other processes rerun this: one record a resume
        return
    if ckpt_path:  # keep the first run's record; note the resume beside it
        n = len(list(run_dir.glob("run-resumed-*.json"))) + 1  # every resume its own record, as logs
        write_run_json_path = run_dir / f"run-resumed-{n}.json"
        from coz.run.atomic import write_text_atomic

        write_text_atomic(write_run_json_path, json.dumps(record, indent=2, default=str))
        return
    write_run_json(run_dir, record)


main = hydra_entry(run, config_name="train_sr", tool_schema=TrainSR)
