"""The evaluation of one job on Weights & Biases (see :mod:`coz.run.wandb_run`; offline unless
``WANDB_MODE`` says otherwise). Jobs of one sweep share a group, so the runs table compares them.

Each job logs its own rows (a table, numbers as numbers), the mean of every metric at every scale
as a curve against ``scale`` (``define_metric``), the same means as summary keys ``<metric>/x<scale>``
(``niqe/x64``: a column per scale in the runs table) and its zoom strips. The job that ends the sweep
(a single job ends its own) logs the sweep's table, its plots and ``report.html`` once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

TIMES = ("sr_s", "pe_s", "metrics_s")


def log_evaluation(
    cfg: DictConfig, run_dir: Path, root: Path, job: dict, rows: list[dict], ends_sweep: bool = True
) -> None:
    import wandb

    from coz.run.wandb_run import start_wandb

    run = start_wandb(
        cfg.logger,
        run_dir,
        "evaluate",
        OmegaConf.to_container(cfg, resolve=True),
        name=f"{job['method']} / {job['dataset']}",
        group=root.name,
        tags=[str(job["table"])],
    )
    try:
        run.define_metric("scale")
        run.define_metric("mean/*", step_metric="scale")
        if rows:
            columns = list(rows[0])
            run.log(
                {"rows": wandb.Table(columns=columns, data=[[_cell(r[c]) for c in columns] for r in rows])}
            )
            metrics = [c for c in columns if isinstance(rows[0][c], float) and c not in TIMES]
            for scale in sorted({r["scale"] for r in rows}):
                at = [r for r in rows if r["scale"] == scale]
                means = {m: _mean([r[m] for r in at]) for m in (*metrics, *TIMES) if m in at[0]}
                means = {m: v for m, v in means.items() if not math.isnan(v)}
                run.log({"scale": scale, **{f"mean/{m}": v for m, v in means.items()}})
                run.summary.update({f"{m}/x{scale}": v for m, v in means.items()})
            run.summary.update({"images": len({r["image"] for r in rows}), "failed_images": _failed(rows)})
        strips = {f"strips/{p.stem}": wandb.Image(str(p)) for p in sorted((run_dir / "strips").glob("*.jpg"))}
        if strips:
            run.log(strips)
        if ends_sweep:
            _log_sweep(run, root)
    finally:
        run.finish()


def _log_sweep(run, root: Path) -> None:
    import wandb

    payload = {}
    table = root / "table.csv"
    if table.exists():
        with table.open(newline="") as f:
            data = list(csv.reader(f))
        if data:
            payload["sweep/table"] = wandb.Table(
                columns=data[0], data=[[_number(v) for v in r] for r in data[1:]]
            )
    payload.update(
        {f"sweep/plots/{p.stem}": wandb.Image(str(p)) for p in sorted((root / "plots").glob("*.png"))}
    )
    report = root / "report.html"
    if report.exists():
        payload["sweep/report"] = wandb.Html(report.read_text(encoding="utf-8"))
    if payload:
        run.log(payload)


def _failed(rows: list[dict]) -> int:
    return len({r["image"] for r in rows if r.get("failed")})


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cell(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _number(text: str):
    """A CSV cell as the number it is (``"11.87"`` -> 11.87), else the text; empty, or the table's
    "—" (no value: e.g. PSNR at a scale without ground truth) -> None, so that a column of numbers
    with gaps stays a number column (W&B refuses a table whose column mixes numbers and text)."""
    if text in ("", "—"):
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return None if isinstance(value, float) and math.isnan(value) else value
    return text
