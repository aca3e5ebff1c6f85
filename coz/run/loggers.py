"""Run loggers of ``coz.zoom``, chosen by the ``logger=`` config group: csv, wandb (offline by default),
both, none."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from coz.chain import Zoom
from coz.run.atomic import write_text_atomic
from coz.zoom.outputs import image_dir


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
    """Weights & Biases (see :mod:`coz.run.wandb_run`): at the end of the run one gallery table, a row per
    finished image of the folder (a resumed run's earlier images included): x1..xN as images
    captioned with their prompts, the animated zoom as a video, the prompts as text; the phase
    timings go to the summary."""

    def __init__(self, cfg: DictConfig, run_dir: Path, run_config: dict[str, Any]) -> None:
        from coz.run.wandb_run import start_wandb

        self.run_dir = run_dir
        self.run = start_wandb(cfg.logger, run_dir, "zoom", run_config)

    def log_summary(self, summary: dict[str, Any]) -> None:
        table = gallery_table(self.run_dir)
        if table is not None:
            self.run.log({"gallery": table})
        self.run.summary.update(summary)

    def close(self) -> None:
        self.run.finish()


#: States wider or taller than this go to W&B as smaller copies (full-image SR makes huge ones).
GALLERY_MAX_SIDE = 2048


def gallery_table(run_dir: Path):
    """The W&B table of every finished image in ``run_dir`` (read from its ``zoom.json``)."""
    import json

    import wandb
    from PIL import Image

    records = []
    for path in sorted((run_dir / "images").glob("*/zoom.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not records:
        return None
    scales = records[0]["scales"]
    columns = ["image", *(f"x{s}" for s in scales), "zoom", "prompts"]
    table = wandb.Table(columns=columns)
    for record in records:
        files, prompts = record["files"], record.get("prompts") or []
        cells = []
        for i, scale in enumerate(scales):
            file = run_dir / files.get(f"state_{i}", "")
            if i >= len(record["scales"]) or not file.is_file():
                cells.append(None)
                continue
            caption = f"x{scale}" + (
                f": {prompts[i - 1]}" if i and i <= len(prompts) and prompts[i - 1] else ""
            )
            image = Image.open(file)
            if max(image.size) > GALLERY_MAX_SIDE:
                image.thumbnail((GALLERY_MAX_SIDE, GALLERY_MAX_SIDE))
                cells.append(wandb.Image(image, caption=caption))
            else:
                cells.append(wandb.Image(str(file), caption=caption))
        gif = run_dir / files["gif"] if "gif" in files else None
        video = wandb.Video(str(gif), format="gif") if gif is not None and gif.is_file() else None
        table.add_data(
            record["name"],
            *cells,
            video,
            "\n".join(f"x{s}: {p}" for s, p in zip(scales[1:], prompts, strict=False)),
        )
    return table


class MultiLogger(RunLogger):
    """``logger=both``: every call goes to each logger."""

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = loggers

    def log_zoom(self, name: str, zoom: Zoom, files: dict[str, Path]) -> None:
        for logger in self.loggers:
            logger.log_zoom(name, zoom, files)

    def log_summary(self, summary: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(summary)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def build_logger(cfg: DictConfig, run_dir: Path, names: list[str] | None = None) -> RunLogger:
    """The ``logger=`` of a zoom run (``names``: the run's images; csv restores their rows), or the
    user's with ``logger._target_`` (called with ``run_dir=``; a :class:`RunLogger`)."""
    from coz.run.targets import has_target, instantiate_target
    from coz.run.wandb_run import logger_kinds

    if has_target(cfg.logger):
        return instantiate_target(cfg.logger, "logger", run_dir=run_dir)
    kinds = logger_kinds(cfg.logger)
    loggers: list[RunLogger] = []
    if "csv" in kinds:
        loggers.append(CsvLogger(run_dir, names))
    if "wandb" in kinds:
        loggers.append(WandbLogger(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True)))
    if not loggers:
        return RunLogger()
    return loggers[0] if len(loggers) == 1 else MultiLogger(loggers)
