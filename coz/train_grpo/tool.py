"""``python -m coz.train_grpo``: align the prompt VLM with a critic VLM by GRPO (paper section 3.3,
Algorithm 2; README "Training the prompt VLM").

The policy is the ``prompt=`` VLM (Qwen2.5-VL-3B-Instruct) with a LoRA adapter; the critic is
``critic=internvl`` (InternVL2.5-8B, the paper's Fig. 6) or ``qwen7b`` (Fig. 7); view pairs come from
``data.root`` (LSDIR in the paper). Every hyper-parameter is in ``conf/train_grpo/train_grpo.yaml``. The run
folder holds the adapters (``adapter/`` at the end, ``adapters/step-N/`` at every checkpoint), the
validation rewards (``rewards.csv``, ``rewards.png``), per-step metrics (``train.csv``), sample
prompts, the Lightning checkpoints (``checkpoints/step_N.safetensors`` and ``last.safetensors``: the
adapter and optimizer state only, :mod:`coz.run.checkpoints`) and ``run.json``. Rerunning into the same
folder (``hydra.run.dir=``) resumes from its newest checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.errors import CozError
from coz.run.cli import hydra_entry
from coz.run.handle import Run, execute
from coz.run.lightning_loggers import run_loggers
from coz.run.schema import typed
from coz.run.tool import Tool
from coz.train_grpo.schema import TrainGRPOTool, check_trainer

log = logging.getLogger("coz.train_grpo")

# The [train] extra is looked for here, where coz.run.extras turns its absence into one line naming it,
# but not imported: Lightning (~7 s) is imported in the body, once the config and the models are checked.
if importlib.util.find_spec("lightning") is None:
    raise ModuleNotFoundError("No module named 'lightning'", name="lightning")


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train into ``run_dir`` (Hydra's run folder by default), resuming from its last checkpoint if it
    has one. Returns the run record (also ``run.json``)."""
    return execute(TOOL, cfg, run_dir)


@dataclass(frozen=True)
class Plan:
    """What :func:`check` found: the images (split into training and validation) and the cached
    commits of the models."""

    root: str
    train: list[Path]
    val: list[Path]
    commits: dict[str, str | None]


def check(cfg: DictConfig) -> Plan:
    """Everything that can refuse the run before its folder is claimed: the rules that span keys, the
    images and the models (a missing model is one line here, before anything loads or is written)."""
    from coz.train_grpo.data import list_images, split_images

    check_config(cfg)
    commits = preflight(cfg)
    root = cfg.input or cfg.data.root
    if cfg.data.write_samples and not cfg.input:  # never into a folder the user gave; after the refusals
        from coz.samples import write_samples

        write_samples(root)
    option = "input" if cfg.input else "data.root"
    paths = list_images(root, recursive=cfg.data.recursive, option=option)
    train, val = split_images(paths, cfg.data.val_fraction, cfg.seed)
    return Plan(root, train, val, commits)


def train(run: Run) -> dict[str, Any]:
    """The body: train from ``run.checkpoint`` (None: a fresh start) to ``grpo.steps``."""
    from coz.run.checkpoint_files import checkpoint_step

    cfg, plan, ckpt = run.cfg, run.plan, run.checkpoint
    resume_step = checkpoint_step(ckpt) if ckpt else None
    record = run.record
    record.update(
        images={"root": plan.root, "train": len(plan.train), "val": len(plan.val)},
        model_commits=plan.commits,
    )
    _write_split(run.dir, Path(plan.root), plan.train, plan.val)
    if resume_step is not None and resume_step >= cfg.grpo.steps:
        print(f"coz.train_grpo: {run.dir} already finished {resume_step} steps (grpo.steps={cfg.grpo.steps})")
        return _finish(run.dir, record, run.started, resume_step)
    if resume_step is not None:
        log.info("resuming from %s (step %d)", ckpt, resume_step)
    log.info(
        "GRPO: policy %s, critic %s, %d training / %d validation images -> %s",
        cfg.prompt.model if cfg.prompt.name != "tiny_vlm" else f"tiny_vlm (shape {cfg.prompt.shape})",
        cfg.critic.name,
        len(plan.train),
        len(plan.val),
        run.dir,
    )
    run.save_record()
    trainer, _ = _fit(cfg, run.dir, plan.train, plan.val, ckpt, resume_step, logger=run.logger)
    return _finish(run.dir, record, run.started, int(trainer.global_step))


def check_config(cfg: DictConfig) -> DictConfig:
    """Refuse options that cannot work before any model loads: each key's type and range by the schema
    (:func:`coz.run.schema.typed`; a config not yet typed is typed here), then the rules that span keys.
    Returns the typed config."""
    from coz.train_grpo.critic import check_pinned

    if OmegaConf.get_type(cfg) is not TrainGRPOTool:  # tests and the Python API call this directly
        cfg = typed(TrainGRPOTool, cfg)
    check_trainer(cfg)
    g, updates = cfg.grpo, cfg.grpo.updates_per_generation
    checks = [
        (
            g.steps % updates == 0,
            f"grpo.steps={g.steps} must be a multiple of grpo.updates_per_generation={updates} "
            "(the run must not end inside a generation round)",
        ),
        (
            cfg.checkpoint.every_n_steps % updates == 0,
            f"checkpoint.every_n_steps={cfg.checkpoint.every_n_steps} must be a multiple of "
            f"grpo.updates_per_generation={updates} (a checkpoint cannot fall inside a generation round)",
        ),
        (
            cfg.critic.name != "keyword" or any(str(w) for w in cfg.critic.words),
            "critic.words=[]: critic=keyword needs the words to reward, e.g. critic.words=[sharp] "
            "(checked here, not when the critic is built in the run, perhaps in a spawned DDP worker)",
        ),
        (
            cfg.data.size % cfg.data.factor == 0,
            f"data.size={cfg.data.size}: must be a multiple of data.factor={cfg.data.factor} "
            "(the view is the center 1/factor of the state)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise CozError(message)
    check_pinned(cfg.critic)
    return cfg


def preflight(cfg: DictConfig) -> dict[str, str | None]:
    """Check that the policy and critic models can be loaded; their cached commits for run.json."""
    from coz.backbones.diffusion.hub import check_available
    from coz.train_grpo.critic import critic_model
    from coz.train_grpo.models import cached_commit

    commits, missing = {}, []
    wanted = []
    if cfg.prompt.name != "tiny_vlm":
        wanted.append((cfg.prompt.model, cfg.prompt.revision, "prompt.model"))
    if critic := critic_model(cfg.critic):
        wanted.append((*critic, "critic.model"))
    for model, revision, option in wanted:
        try:
            check_available(model, revision, option)
        except CozError as err:
            missing.append(str(err))
            continue
        commits[model] = cached_commit(model, revision)
    if missing:
        raise CozError("; ".join(missing))
    if cfg.prompt.adapter and not (Path(cfg.prompt.adapter) / "adapter_config.json").is_file():
        raise CozError(f"prompt.adapter={cfg.prompt.adapter}: no adapter_config.json there")
    return commits


def _fit(
    cfg: DictConfig, run_dir: Path, train, val, ckpt: Path | None, resume_step: int | None, logger: Any = None
):
    """Train; ``logger``: the run's Lightning loggers (by default those of ``cfg.logger``)."""
    from coz.run.checkpoints import SafetensorsCheckpointIO, StepCheckpoint
    from coz.run.lightning_loggers import finish_wandb, lightning_loggers
    from coz.run.trainer import build_trainer, ctrl_c_stays_an_interrupt
    from coz.train_grpo.module import GRPOModule

    module = GRPOModule(cfg, run_dir, train, val)
    module.resume_step = resume_step
    checkpoints = StepCheckpoint(run_dir / "checkpoints", cfg.checkpoint.every_n_steps, cfg.checkpoint.keep)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=".*(does not have many workers|num_workers|IterableDataset|pre-optimization state).*",
        )
        trainer = build_trainer(
            cfg.trainer,
            max_steps=cfg.grpo.steps,
            logger=logger
            if logger is not None
            else lightning_loggers(
                cfg.logger,
                run_dir,
                "train_grpo",
                OmegaConf.to_container(cfg, resolve=True),
                ckpt is not None,
                csv=False,
            ),
            callbacks=[checkpoints],
            plugins=[SafetensorsCheckpointIO()],
            enable_model_summary=False,
            enable_progress_bar=False,  # the module draws its own (trainer.progress_bar)
            num_sanity_val_steps=0,
            limit_val_batches=0,
            use_distributed_sampler=False,
            default_root_dir=str(run_dir),
        )
        try:
            with ctrl_c_stays_an_interrupt():
                trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        finally:
            finish_wandb(trainer)
    return trainer, module


def _write_split(run_dir: Path, root: Path, train: list[Path], val: list[Path]) -> None:
    from coz.run.atomic import write_text_atomic

    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    split = {"root": str(root), "train": len(train), "val": [rel(p) for p in val]}
    write_text_atomic(run_dir / "split.json", json.dumps(split, indent=1))


def _finish(run_dir: Path, record: dict[str, Any], started: float, step: int) -> dict[str, Any]:
    from coz.run.runinfo import write_run_json
    from coz.train_grpo.logs import CsvFile, plot_rewards

    rewards = CsvFile(run_dir / "rewards.csv").rows()
    trained = CsvFile(run_dir / "train.csv").rows()
    if trained:  # under ddp_spawn the workers trained: the main process's own counter stayed at 0
        step = max(step, max(int(r["step"]) for r in trained))
    record.update(
        step=step,
        adapter=str(run_dir / "adapter"),
        seconds=round(time.perf_counter() - started, 2),
        validation=rewards,
    )
    plot = plot_rewards(rewards, run_dir / "rewards.png", trained)
    if record["images"]["val"] and not rewards:  # every validation image unreadable: not a success
        record["failed"] = {
            "validation": f"no validation reward: none of the {record['images']['val']} validation "
            f"image(s) in {run_dir / 'split.json'} was readable (see the warnings above)"
        }
        print(f"coz.train_grpo: 1 input skipped:\n  {record['failed']['validation']}")
    write_run_json(run_dir, record)
    if rewards:
        first, last = rewards[0], rewards[-1]
        print(
            f"coz.train_grpo: {step} step(s); validation total reward {float(first['total']):.4f} "
            f"(step {first['step']}) -> {float(last['total']):.4f} (step {last['step']})"
        )
    policy = (record.get("config") or {}).get("prompt", {}).get("name", "vlm")  # the adapter's prompt option
    print(
        f"coz.train_grpo: adapter in {run_dir / 'adapter'} "
        f"(use: python -m coz.zoom input=... prompt={policy} prompt.adapter={run_dir / 'adapter'})"
    )
    print(f"coz.train_grpo: rewards in {run_dir / 'rewards.csv'}" + (f" and {plot}" if plot else ""))
    return record


TOOL = Tool(
    name="train_grpo",
    schema=TrainGRPOTool,
    body=train,
    check=check,
    # longer, or spread otherwise; optim.lr: a run that diverged resumes with a lower one (coz.run.divergence)
    may_change=("grpo.steps", "trainer", "resume", "data.num_workers", "optim.lr"),
    resume="checkpoint",
    logger=partial(run_loggers, csv=False),  # W&B; its CSV files are its own (coz.train_grpo.logs)
    lightning=True,
)

main = hydra_entry(TOOL)
