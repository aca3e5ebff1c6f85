"""``python -m coz.evaluate``: zoom a dataset with one method, score every scale, and rebuild the
report of the run (or of the whole sweep) with the paper's numbers beside ours.

One job = one method on one dataset (``conf/evaluate/evaluate.yaml``). Tables come from sweeps:
``-m prompt=null,dape,vlm``, or a preset such as ``experiment=table1`` that sets the sweep itself.
Rows are appended per image as they are scored, so a rerun into the same folder
(``hydra.run.dir=...`` / ``hydra.sweep.dir=...``) skips finished images and loses nothing.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.chain import INTERPOLATION_MODES
from coz.errors import CozError
from coz.evaluate.dataset import dataset_items, dataset_name, split
from coz.evaluate.methods import method_label
from coz.evaluate.rows import finished_images, read_rows
from coz.evaluate.schema import EvaluateTool, check_config, without_other_prompts_keys
from coz.run.cli import hydra_entry
from coz.run.handle import Run, execute
from coz.run.tool import Tool
from coz.run.validate import check_chain

log = logging.getLogger("coz.evaluate")

VLM_PROMPTS = ("vlm", "vlm_ar1", "tiny_vlm")


def run(cfg: DictConfig, run_dir: Path | None = None, results_root: Path | None = None) -> dict[str, Any]:
    """Evaluate one method on one dataset into ``run_dir``; rebuild the report of ``results_root``
    (the sweep folder in a multirun, else ``run_dir``). Returns the job record (``run.json``)."""
    return execute(TOOL, cfg, run_dir, results_root=results_root)


@dataclass(frozen=True)
class Plan:
    """What :func:`check` found: the job (as rows and reports name it) and this shard's images."""

    job: dict[str, Any]
    items: list


def check(cfg: DictConfig) -> Plan:
    """The rules that span keys, the chain's geometry (as coz.zoom) and the dataset, before the
    folder is claimed."""
    check_config(cfg)
    check_chain(cfg)
    job = describe_job(cfg)
    return Plan(job, split(dataset_items(cfg), cfg.shard.index, cfg.shard.count))


def evaluate(run: Run) -> dict[str, Any]:
    """The body: score the images not scored yet, then rebuild the report."""
    cfg, job, items = run.cfg, run.plan.job, run.plan.items
    root = Path(run.options.get("results_root") or _sweep_dir() or run.dir)
    record = run.record
    record["job"] = job  # the report finds the jobs of a sweep by their run.json
    run.save_record()
    scales = [cfg.zoom.factor**k for k in range(1, cfg.zoom.steps + 1)]
    done = finished_images(read_rows(run.dir), job["dataset"], job["method"], scales)
    todo = [item for item in items if item.name not in done]
    if done:
        log.info(
            "resuming: %d of %d images already scored in %s", len(items) - len(todo), len(items), run.dir
        )
    log.info("%s / %s: %d image(s) to score -> %s", job["dataset"], job["method"], len(todo), run.dir)
    if todo:
        _predict(cfg, run.dir, todo, job, job_label(job))

    rows = [r for r in read_rows(run.dir) if r["dataset"] == job["dataset"] and r["method"] == job["method"]]
    images = {r["image"] for r in rows}
    failed = {r["image"] for r in rows if r["failed"]}
    if items and not images - failed:
        raise CozError(f"every image failed for {job['method']} on {job['dataset']}; see the log above")
    record.update(images=len(images), failed_images=sorted(failed), run_dir=str(run.dir))
    run.save_record()

    from coz.evaluate.report import build_report

    outputs = build_report(root, cfg)
    from coz.run.wandb_run import logger_kinds

    if "wandb" in logger_kinds(cfg.logger):  # the rows are always CSV files: csv adds nothing
        from coz.evaluate.wandb_log import log_evaluation

        position, total = sweep_position()
        log_evaluation(cfg, run.dir, root, job, rows, ends_sweep=total is None or position == total)
    print(
        f"coz.evaluate: {job['dataset']} / {job['method']}: {len(images)} image(s) scored, {len(failed)} failed"
    )
    print(f"coz.evaluate: rows in {run.dir / 'rows'}")
    for name, path in outputs.items():
        print(f"coz.evaluate: {name}: {path}")
    return record


def describe_job(cfg: DictConfig) -> dict[str, Any]:
    """What a job of the typed ``cfg`` evaluates, as the rows and the report name it; refuses a
    table's VLM prompts without the adapter it reports."""
    mode = cfg.zoom.mode
    prompt = "null" if mode in INTERPOLATION_MODES or cfg.prompt is None else cfg.prompt.name
    if cfg.needs_adapter and prompt in VLM_PROMPTS and not cfg.prompt.adapter:
        raise CozError(
            f"{cfg.table} needs prompt.adapter=PATH: the GRPO adapter it reports "
            "(for table5, one trained with python -m coz.train_grpo critic=qwen7b)"
        )
    return {
        "table": cfg.table,
        "task": cfg.task,
        "dataset": dataset_name(cfg),
        "method": method_label(mode, prompt, cfg.method.label, OmegaConf.to_container(cfg.labels)),
        "zoom_mode": mode,
        "backbone": "-" if mode in INTERPOLATION_MODES else cfg.backbone.name,
        "prompt_mode": prompt,
    }


def job_label(job: dict[str, Any]) -> str:
    """``job 2/6: coz_vlm on div2k`` in a sweep, ``coz_vlm on div2k`` alone."""
    text = f"{job['method']} on {job['dataset']}"
    position, total = sweep_position()
    if position is None:
        return text
    return f"job {position}{f'/{total}' if total else ''}: {text}"


def sweep_position() -> tuple[int | None, int | None]:
    """(this job's number from 1, the sweep's job count) in a ``-m`` run; (None, None) for a single
    job; the count is None when it cannot be told."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None, None
    hc = HydraConfig.get()
    return int(hc.job.num) + 1, sweep_size(dict(hc.sweeper.get("params") or {}), sys.argv[1:])


def sweep_size(params: dict[str, str], args: list[str]) -> int | None:
    """How many jobs Hydra's basic sweeper makes of a preset's ``hydra.sweeper.params`` and the
    command line's overrides (the command line wins per key); None when it cannot tell."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        lines = {key: f"{key}={value}" for key, value in params.items()}
        for arg in args:
            if not arg.startswith("-"):
                lines[arg.split("=", 1)[0]] = arg
        overrides = OverridesParser.create().parse_overrides(list(lines.values()))
        total = 1
        for override in overrides:
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    except Exception:  # noqa: BLE001 - a label, never worth failing a job for
        return None


def _predict(cfg: DictConfig, run_dir: Path, todo: list, job: dict[str, Any], label: str = "") -> None:

    from coz.evaluate.module import EvaluationModule
    from coz.run.trainer import build_trainer, ctrl_c_stays_an_interrupt

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|num_workers).*")
        trainer = build_trainer(
            cfg.trainer,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,  # the module counts images x scales (coz.run.progress)
            use_distributed_sampler=False,  # the module shards itself: no padded repeats
            default_root_dir=str(run_dir),
        )
        with ctrl_c_stays_an_interrupt():
            trainer.predict(EvaluationModule(cfg, run_dir, todo, job, label), return_predictions=False)


def _sweep_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


TOOL = Tool(
    name="evaluate",
    schema=EvaluateTool,
    body=evaluate,
    check=check,
    may_change=("trainer", "report"),  # how the work is spread or shown, not what is computed
    before_typing=without_other_prompts_keys,
)

main = hydra_entry(TOOL)
