"""Run loggers, chosen by the ``logger=`` config group: csv, wandb (offline by default), none."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.atomic import write_text_atomic
from coz.chain import Zoom
from coz.outputs import image_dir


class RunLogger:
    """Receives every finished zoom; the base class logs nothing."""

    def log_zoom(self, name: str, zoom: Zoom, files: dict[str, Path]) -> None:
        pass

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class CsvLogger(RunLogger):
    """One row per image and step in ``<run>/metrics.csv``, appended as zooms finish.

    An image's rows belong to its result: on start the file is rewritten from the ``zoom.json`` of
    every finished image of ``names`` (in their order), so rows that a kill cut short or never wrote
    are restored and rows of unfinished images dropped; a resumed run ends with the rows of an
    uninterrupted one.
    """

    FIELDS = ("image", "step", "scale", "prompt", "state")

    def __init__(self, run_dir: Path, names: list[str] | None = None) -> None:
        self.path = run_dir / "metrics.csv"
        rows = [self.FIELDS]
        for name in names or ():
            unit = image_dir(run_dir, name) / "zoom.json"
            if unit.exists():
                rows.extend(self._rows(name, json.loads(unit.read_text(encoding="utf-8"))))
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        write_text_atomic(self.path, buffer.getvalue())

    @staticmethod
    def _rows(name: str, unit: dict[str, Any]) -> list[tuple]:
        return [
            (name, i, unit["scales"][i], prompt or "", Path(unit["files"][f"state_{i}"]).name)
            for i, prompt in enumerate(unit["prompts"], start=1)
        ]

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


def build_logger(cfg: DictConfig, run_dir: Path, names: list[str] | None = None) -> RunLogger:
    """The ``logger=`` of a zoom run; ``names``: the run's images (csv restores their rows)."""
    name = str(cfg.logger.name)
    if name == "csv":
        return CsvLogger(run_dir, names)
    if name == "wandb":
        return WandbLogger(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True))
    if name == "none":
        return RunLogger()
    raise ValueError(f"logger={name}: unknown logger (available: csv, wandb, none)")
