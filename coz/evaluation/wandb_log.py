"""The evaluation of one job on Weights & Biases (offline unless ``WANDB_MODE`` says otherwise):
its per-image rows and the sweep's aggregate as tables, each metric against the scale as a chart,
the report's plots and the zoom strips as images. Jobs of one sweep share a W&B group."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def log_evaluation(cfg: DictConfig, run_dir: Path, root: Path, job: dict, rows: list[dict]) -> None:
    import wandb

    logger = cfg.logger
    run = wandb.init(
        project=logger.project,
        entity=logger.entity,
        mode=os.environ.get("WANDB_MODE", logger.mode),
        dir=str(run_dir),
        name=f"{job['method']} / {job['dataset']}",
        group=root.name,
        job_type="evaluate",
        config=OmegaConf.to_container(cfg, resolve=True),
        tags=[*logger.tags, job["table"]],
        reinit="finish_previous",
    )
    try:
        if rows:
            columns = list(rows[0])
            run.log(
                {"rows": wandb.Table(columns=columns, data=[[_cell(r[c]) for c in columns] for r in rows])}
            )
            metrics = [c for c in columns if isinstance(rows[0][c], float) and c not in ("sr_s", "pe_s")]
            for scale in sorted({r["scale"] for r in rows}):
                at = [r for r in rows if r["scale"] == scale]
                means = {m: _mean([r[m] for r in at]) for m in (*metrics, "sr_s", "pe_s")}
                run.log({"scale": scale, **{f"mean/{m}": v for m, v in means.items() if not math.isnan(v)}})
        table = root / "table.csv"
        if table.exists():
            with table.open(newline="") as f:
                data = list(csv.reader(f))
            if data:
                run.log({"aggregate": wandb.Table(columns=data[0], data=data[1:])})
        images = {f"plots/{p.stem}": wandb.Image(str(p)) for p in sorted((root / "plots").glob("*.png"))}
        images.update(
            {f"strips/{p.stem}": wandb.Image(str(p)) for p in sorted((run_dir / "strips").glob("*.jpg"))}
        )
        if images:
            run.log(images)
    finally:
        run.finish()


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cell(value):
    return None if isinstance(value, float) and math.isnan(value) else value
