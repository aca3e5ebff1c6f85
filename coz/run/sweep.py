"""A ``-m`` sweep's job outcomes, whichever launcher ran the jobs.

The basic launcher runs every job in the launching process, but submitit (``hydra/launcher=
submitit_local`` or ``submitit_slurm``) runs each in a process of its own, maybe on another machine:
what a job did must come back through the sweep folder, which those launchers already share. Each
job writes ``<hydra.sweep.dir>/.coz-jobs/<job number>.json`` (its folder, exit code and one-line
message); :class:`SweepOutcomes`, a Hydra callback every tool's config names, clears the records
when a sweep starts and reads them back in the launching process when it ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from coz.run.atomic import write_atomic

RECORDS = ".coz-jobs"

# (folder, exit code, message) per job of the sweep that ended last in this process
finished: list[tuple[str, int, str]] | None = None
# the sweep folder of the sweep that started last in this process, where that sweep made it (a
# sweep Hydra refuses before its first job leaves a folder holding only multirun.yaml: coz.run.entry)
made_dir: Path | None = None


def record(sweep_dir: Path, job_num: int, folder: str, code: int, message: str) -> None:
    """Called in the job's own process, whatever the launcher."""
    entry = {"folder": folder, "code": code, "message": message}
    write_atomic(Path(sweep_dir) / RECORDS / f"{job_num}.json", lambda p: p.write_text(json.dumps(entry)))


def read(sweep_dir: Path) -> list[tuple[str, int, str]]:
    """The records of ``sweep_dir``, in job order."""
    files = sorted((Path(sweep_dir) / RECORDS).glob("*.json"), key=lambda f: int(f.stem))
    entries = [json.loads(f.read_text()) for f in files]
    return [(e["folder"], int(e["code"]), e["message"]) for e in entries]


class SweepOutcomes(Callback):
    """Runs in the launching process: a rerun into the same sweep folder starts with no records;
    at the end the records become :data:`finished` for :func:`coz.run.entry.report`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global finished, made_dir
        finished = None
        folder = Path(config.hydra.sweep.dir)
        made_dir = None if folder.exists() else folder
        shutil.rmtree(Path(config.hydra.sweep.dir) / RECORDS, ignore_errors=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global finished
        finished = read(Path(config.hydra.sweep.dir))
