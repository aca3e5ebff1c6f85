"""``python -m coz.train_sr``: train an OSEDiff-style SR backbone, coarse-to-fine (paper 4.1, B.3).

``backbone=sd3`` (the paper's), ``sd21``, their offline twins ``tiny_sd3`` / ``tiny_sd21``, or
``realesrgan`` (the CNN recipe: full fine-tuning of the embedded Real-ESRGAN, CPU-friendly). Data,
degradation, stages, losses and optimisers follow docs/fidelity.md "Training the SR backbone"; see
``conf/train_sr/train_sr.yaml``. A run folder holds ``run.json``, ``train_sr.log``, ``checkpoints/``
(safetensors, ``last.safetensors``: :mod:`coz.run.checkpoints`), ``images/`` (LR / SR / HR grids),
the logger's files and ``export/`` (the final weights in coz.zoom's formats). Rerunning a command into its run
folder (``hydra.run.dir=``) resumes it exactly from its newest checkpoint (``resume=``: :func:`coz.run.checkpoint_files.resume_from`;
longer ``stages``: trains on).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError
from coz.run.cli import hydra_entry
from coz.run.handle import Run, execute
from coz.run.lightning_loggers import finish_wandb, lightning_loggers, run_loggers
from coz.run.schema import typed
from coz.run.tool import Tool
from coz.train_sr.schema import TrainSR

log = logging.getLogger("coz.train_sr")


def run(cfg: DictConfig, run_dir: Path | str | None = None) -> dict[str, Any]:
    """Train into ``run_dir`` (the Hydra run folder by default); returns the run record (``run.json``)."""
    return execute(TOOL, cfg, run_dir)


def train(run: Run) -> dict[str, Any]:
    """The body: fit from ``run.checkpoint`` (None: a fresh start), then report the export."""
    from coz.run.trainer import ctrl_c_stays_an_interrupt

    trainer, module = build(run.cfg, run.dir, logger=run.logger)
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
            with ctrl_c_stays_an_interrupt():
                trainer.fit(module, ckpt_path=None if run.checkpoint is None else str(run.checkpoint))
        finally:
            finish_wandb(trainer)
    export = run.dir / "export" / "export.json"
    record = run.record
    record.update(run_dir=str(run.dir), checkpoints=str(run.dir / "checkpoints"))
    if export.is_file():
        record["export"] = json.loads(export.read_text())
        from coz.train_sr.export import zoom_command

        files = {k: Path(v) for k, v in record["export"]["files"].items()}
        print(f"coz.train_sr: exported weights in {export.parent}")
        print(f"coz.train_sr: use them with: {zoom_command(run.cfg.backbone.name, files)}")
    run.save_record()
    print(f"coz.train_sr: run folder {run.dir}")
    return record


def check_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` typed (coz/train_sr/schema.py: every key's type and range), then the rules that read
    several keys or the disk, in one line each, before any model loads or a file is written."""
    from coz.train_sr.data import list_source
    from coz.train_sr.generators import GENERATORS
    from coz.train_sr.schema import check_trainer

    if OmegaConf.get_type(cfg) is not TrainSR:  # tests call this directly
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


def build(cfg: DictConfig, run_dir: Path, resumed: bool = False, logger: Any = None):
    """The Lightning trainer and module of a run (tests drive them directly); ``logger``: the run's
    Lightning loggers (by default those of ``cfg.logger``)."""
    import torch

    from coz.run.checkpoints import SafetensorsCheckpointIO, StepCheckpoint
    from coz.run.trainer import build_trainer
    from coz.train_sr.export import FinalExport
    from coz.train_sr.module import SRTrainingModule

    t = cfg.trainer
    accelerator = t.accelerator
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    precision = str(t.precision)
    if precision == "auto":
        precision = "16-mixed" if on_gpu else "32-true"  # fp16 on GPUs for speed (the release: fp32)
    trainer = build_trainer(
        t,
        precision=precision,
        max_epochs=1,
        max_steps=-1,
        logger=logger
        if logger is not None
        else lightning_loggers(
            cfg.logger, run_dir, "train_sr", OmegaConf.to_container(cfg, resolve=True), resumed
        ),
        callbacks=[
            StepCheckpoint(run_dir / "checkpoints", cfg.checkpoint.every_n_steps, cfg.checkpoint.keep),
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
        deterministic=cfg.deterministic,
    )
    return trainer, SRTrainingModule(cfg, run_dir)


TOOL = Tool(
    name="train_sr",
    schema=TrainSR,
    body=train,
    check=check_config,
    # how long (stages: a longer schedule trains on) and how spread the training is; what is logged
    # optim.lr: a run that diverged resumes from its last finite checkpoint with a lower one (coz.run.divergence)
    may_change=(
        "resume",
        "trainer.devices",
        "trainer.num_nodes",
        "data.num_workers",
        "log",
        "stages",
        "optim.lr",
    ),
    resume="checkpoint",
    logger=run_loggers,
    lightning=True,
)

main = hydra_entry(TOOL)
