"""The life of a run, the same for every tool: :func:`execute` runs a :class:`coz.run.tool.Tool`
declaration and hands its body one :class:`Run` handle.

The order is fixed: typed config -> the checkpoint ``resume=PATH`` names -> the tool's ``check``
(cross-key and disk rules: a refused run leaves nothing behind) -> claim and lock the run folder (:mod:`coz.run.folder`) -> the resume check
against the folder's ``run.json`` (:mod:`coz.run.resume`; a ``checkpoint`` tool also looks up the
checkpoint ``resume=`` names) -> record this attempt's Hydra config (``.hydra/``,
``.hydra-resumed-N/``) -> seed -> threads -> device -> ``run.json`` -> the tool's logger -> the body.

``run.json`` has one shape (README "Runs, resume and exit codes"):

- ``tool``: the tool's name (``zoom``); ``config``: this attempt's resolved config; ``choices``: its
  Hydra group choices; ``seed``; ``device``; ``threads``: torch's CPU thread count;
  ``versions``: Python, coz and the packages; ``machine``: CPU, GPU;
- ``attempts``: one entry per start into the folder, oldest first: ``started`` (UTC), ``config_dir``
  (``.hydra`` or ``.hydra-resumed-N``), ``resumed_from`` (the checkpoint; None for a fresh start or a
  ``units`` tool), ``seed``, ``device``, ``threads``;
- then the tool's own fields (zoom: ``images``, ``failed``, ``timings``, ``finished``; evaluate:
  ``job``, ``images``, ``failed_images``; train_sr: ``checkpoints``, ``export``; train_grpo: ``images``,
  ``model_commits``, ``step``, ``adapter``, ``validation``...). ``failed`` lists the inputs skipped
  (``run.skip``): the command then exits 1.

A folder made before this shape (no ``attempts``) resumes the same way: only its ``config`` is
compared; evaluate's older ``job.json`` is read when there is no ``run.json``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from coz.run.folder import claim, is_main_process, record_attempt
from coz.run.progress import Progress
from coz.run.resume import check_resume, read_record
from coz.run.runinfo import machine, versions, write_run_json
from coz.run.runtime import (
    fixed_threads,
    hydra_choices,
    hydra_run_dir,
    resolve_device,
    seed_everything,
)
from coz.run.schema import typed
from coz.run.tool import Tool

if TYPE_CHECKING:  # torch loads when a run starts (Run.start), after its config and folder are checked
    import torch

    from coz.run.cpu_share import CpuShare

RECORD_NAME = "run.json"


class Run:
    """What a tool's body is handed: ``cfg`` (typed), ``dir`` (claimed and locked), ``plan`` (what
    the tool's ``check`` found), ``seed``, ``device``, ``threads``, ``checkpoint`` (the one to resume
    from, ``checkpoint`` tools), ``record`` (``run.json``, written by :meth:`save_record`),
    ``logger``, and :meth:`progress`, :meth:`skip`, :meth:`refresh_threads`."""

    def __init__(self, tool: Tool, cfg: DictConfig, run_dir: Path, plan: Any, options: dict[str, Any]):
        self.tool, self.cfg, self.dir, self.plan, self.options = tool, cfg, run_dir, plan, options
        self.started = time.perf_counter()
        self.config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
        self.earlier: dict[str, Any] | None = None
        self.checkpoint: Path | None = None
        self.seed = cfg.seed
        self.device: torch.device | None = None  # set by start()
        self.threads = 0
        self.record: dict[str, Any] = {}
        self.logger: Any = None
        self._share: CpuShare | None = None
        self._progresses: list[Progress] = []

    # the lifecycle, in order (execute calls these)

    def check_resume(self) -> None:
        """Refuse a config that would change the folder's results; find the checkpoint to resume."""
        if self.tool.resume == "checkpoint":
            from coz.run.checkpoint_files import resume_from

            backbone = self.cfg.backbone.get("name") if "backbone" in self.cfg else None
            self.checkpoint = resume_from(self.cfg.resume, self.dir, f"coz.{self.tool.name}", backbone)
        if not is_main_process():  # DDP's other processes: the first one checked and writes
            return
        self.earlier = earlier_record(self.dir, self.tool.name)
        check_resume(
            self.earlier and self.earlier.get("config"), self.config, self.tool.resume_keys(), self.dir
        )

    def start(self) -> None:
        """Record the attempt, then seed, threads and device, then ``run.json`` and the logger."""
        from coz.run.cpu_share import CpuShare

        config_dir = record_attempt(self.dir, self.cfg)
        seed_everything(self.seed, workers=self.tool.lightning)
        # threads=auto shares the cores with the other coz processes, the same in every tool
        self._share = CpuShare(threads=fixed_threads(self.cfg.threads))
        self.threads = self._share.refresh()
        self.device = run_device(self.cfg)
        attempt = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "config_dir": config_dir.name if config_dir else None,
            "resumed_from": None if self.checkpoint is None else str(self.checkpoint),
            "seed": self.seed,
            "device": str(self.device),
            "threads": self.threads,
        }
        self.record = {
            "tool": self.tool.name,
            "config": self.config,
            "choices": hydra_choices(),
            "seed": self.seed,
            "device": str(self.device),
            "threads": self.threads,
            "versions": versions(),
            "machine": machine(),
            "attempts": [*earlier_attempts(self.earlier), attempt],
        }
        self.save_record()  # from the start: a rerun compares its config with this one
        if self.tool.logger is not None:
            self.logger = self.tool.logger(self)

    def close(self) -> None:
        for bar in self._progresses:
            bar.close()
        if self._share is not None:
            self._share.close()

    # what the body uses

    def save_record(self) -> None:
        """Write ``run.json`` (atomically; the first process of a DDP run only)."""
        if is_main_process():
            write_run_json(self.dir, self.record)

    def refresh_threads(self) -> int:
        """Recount the coz processes sharing the cores (``threads=auto``); the thread count now."""
        if self._share is not None:
            self.threads = self._share.refresh()
        else:
            import torch

            self.threads = torch.get_num_threads()
        return self.threads

    def progress(self, total: int | None, desc: str, unit: str, initial: int = 0) -> Progress:
        """A progress bar (:mod:`coz.run.progress`), closed with the run."""
        bar = Progress(total, desc, unit, initial=initial)
        self._progresses.append(bar)
        return bar

    def skip(self, item: Any, reason: str) -> None:
        """Skip one input, saying why: listed in ``run.json``'s ``failed``; the command exits 1."""
        logging.getLogger(f"coz.{self.tool.name}").error("%s", reason)
        self.record.setdefault("failed", {})[str(item)] = reason

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def execute(tool: Tool, cfg: DictConfig, run_dir: Path | str | None = None, **options: Any) -> Any:
    """Run ``tool`` on ``cfg`` into ``run_dir`` (Hydra's run folder by default); the body's record.
    ``options``: what a Python caller passes beside the config (``run.options``)."""
    run_dir = Path(run_dir or hydra_run_dir())
    if tool.before_typing is not None:
        cfg = tool.before_typing(cfg)
    cfg = typed(tool.schema, cfg)  # every key and value, before any model loads or a file is written
    if tool.resume == "checkpoint" and str(cfg.resume) not in ("auto", "none"):
        from coz.run.checkpoint_files import resume_from  # resume=PATH names no folder: check it unclaimed

        backbone = cfg.backbone.get("name") if "backbone" in cfg else None
        resume_from(cfg.resume, run_dir, f"coz.{tool.name}", backbone)
    plan = tool.check(cfg) if tool.check is not None else None  # may write (a smoke run's photos): last
    with claim(run_dir, tool.name):  # one process per folder, from before the first write
        run = Run(tool, cfg, run_dir, plan, options)
        try:
            run.check_resume()
            run.start()
            return tool.body(run)
        finally:
            run.close()


def earlier_record(run_dir: Path, tool: str) -> dict[str, Any] | None:
    """The folder's ``run.json``; for an evaluation made before run.json had one shape, its
    ``job.json``; None in a new folder."""
    record = read_record(run_dir / RECORD_NAME)
    if record is None and tool == "evaluate":
        record = read_record(run_dir / "job.json")
    return record


def earlier_attempts(earlier: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The attempts an earlier ``run.json`` lists (one, undated, for a record made before they were)."""
    if earlier is None:
        return []
    return list(earlier.get("attempts") or [{"started": None, "config_dir": ".hydra"}])


def run_device(cfg: DictConfig) -> torch.device:
    """The device of a run: ``device=`` where the tool has it, else the Lightning trainer's
    ``trainer.accelerator`` (cuda for gpu, or auto on a machine with CUDA)."""
    import torch

    if "trainer" in cfg and "accelerator" in cfg.trainer:
        accelerator = cfg.trainer.accelerator
        cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if cuda else "cpu")
    return resolve_device(cfg.device)
