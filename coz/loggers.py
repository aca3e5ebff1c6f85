"""Run loggers, chosen by the ``logger=`` config group: csv, wandb (offline by default), none."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.chain import Zoom


class RunLogger:
    """Receives every finished zoom; the base class logs nothing."""

    def log_zoom(self, name: str, zoom: Zoom, files: dict[str, Path]) -> None:
        pass

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class CsvLogger(RunLogger):
    """One row per image and step in ``<run>/metrics.csv``, appended as zooms finish."""

    FIELDS = ("image", "step", "scale", "prompt", "state")

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)

    def log_zoom(self, name: str, zoom: Zoom, files: dict[str, Path]) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            for i, step in enumerate(zoom.steps, start=1):
                writer.writerow((name, i, step.scale, step.prompt or "", files[f"state_{i}"].name))


class WandbLogger(RunLogger):
    """Weights & Biases: each zoom as an image sequence (one image per scale, captioned with its
    prompt), its strip, and a table of prompts. Offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=os.environ.get("WANDB_MODE", cfg.mode),
            dir=str(run_dir),
            name=run_dir.name,
            config=run_config,
            tags=list(cfg.tags),
            reinit="finish_previous",
        )
        self.table = wandb.Table(columns=["image", "step", "scale", "prompt"])

    def log_zoom(self, name: str, zoom: Zoom, files: dict[str, Path]) -> None:
        images = [
            self.wandb.Image(state, caption=f"x{scale}" + (f": {zoom.steps[i - 1].prompt}" if i else ""))
            for i, (state, scale) in enumerate(zip(zoom.states, zoom.scales, strict=True))
        ]
        payload = {f"zoom/{name}/states": images}
        if "strip" in files:
            payload[f"zoom/{name}/strip"] = self.wandb.Image(str(files["strip"]))
        self.run.log(payload)
        for i, step in enumerate(zoom.steps, start=1):
            self.table.add_data(name, i, step.scale, step.prompt or "")

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.log({"prompts": self.table})
        for key, value in summary.items():
            self.run.summary[key] = value

    def close(self) -> None:
        self.run.finish()


def build_logger(cfg: DictConfig, run_dir: Path) -> RunLogger:
    """A built-in logger by ``logger.name``, or the user's with ``logger._target_`` (called with
    ``run_dir=``; a :class:`RunLogger`)."""
    from coz.targets import has_target, instantiate_target

    if has_target(cfg.logger):
        return instantiate_target(cfg.logger, "logger", run_dir=run_dir)
    name = str(cfg.logger.name)
    if name == "csv":
        return CsvLogger(run_dir)
    if name == "wandb":
        return WandbLogger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True))
    if name == "none":
        return RunLogger()
    raise ValueError(f"logger={name}: unknown logger (available: csv, wandb, none)")
