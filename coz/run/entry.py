"""The command-line side of the run contract, used by :func:`coz.run.cli.hydra_entry`.

Every job's error becomes one line and an exit code (:mod:`coz.run.exit_codes`); a ``-m`` sweep
runs every job it can, then lists the failed ones and exits with the worst code, under every
launcher (:mod:`coz.run.sweep` brings the outcomes of jobs run in other processes back); command-line
arguments that Hydra cannot parse are named, with how to quote them.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from coz.run import closed_stdout, sweep
from coz.run.exit_codes import (
    DONE,
    ENVIRONMENT,
    SKIPPED,
    classify,
    one_line,
    status_of,
)
from coz.run.extras import missing_package
from coz.run.wandb_run import check_wandb


@dataclass
class Jobs:
    """What the jobs of one command did: how many ran, and (folder, code, message) per failure."""

    tool: str
    count: int = 0
    failed: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, folder: str, code: int, message: str) -> None:
        self.count += 1
        if code != DONE:
            self.failed.append((folder, code, message))

    def exit_code(self) -> int:
        return max((code for _, code, _ in self.failed), default=DONE)


def run_job(run: Callable[[DictConfig], object], cfg: DictConfig, jobs: Jobs) -> None:
    """Run one Hydra job; never raise for a user or environment error, so a sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(".")
    try:
        check_wandb(cfg.get("logger"))  # W&B's mode and network, before the tool writes anything
        code, message = status_of(run(cfg)), "some inputs were skipped (listed above)"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BrokenPipeError:
        if not closed_stdout.stdout_closed():
            raise
        closed_stdout.exit_quietly()  # `| head -1` has all it wanted
    except Exception as err:  # noqa: BLE001 - sorted below: user errors are one line, bugs a traceback
        missing = missing_package(err, jobs.tool)
        known = (ENVIRONMENT, missing) if missing else classify(err)
        if known is None:
            if not multirun:
                raise
            traceback.print_exc()
            known = (SKIPPED, f"crashed: {type(err).__name__}: {one_line(str(err))}")
        code, message = known
        print(f"error: {message}", file=sys.stderr)
        remove_if_unused(run_dir, jobs.tool)
    if multirun:  # maybe in a process of its own (submitit): the launching one reads it back
        hydra = HydraConfig.get()
        sweep.record(Path(hydra.sweep.dir), hydra.job.num, str(run_dir), code, message)
    else:
        jobs.add(str(run_dir), code, message)


def remove_if_unused(run_dir: Path, tool: str) -> None:
    """A run refused before it claimed its folder leaves no folder behind: Hydra made it (with an
    empty log file) before the config could be checked, and in the default layout its parents too."""
    try:
        entries = list(run_dir.iterdir())
        if all(e.is_file() and e.suffix == ".log" and e.stat().st_size == 0 for e in entries):
            close_log_files_in(run_dir)
            for e in entries:
                e.unlink()
            run_dir.rmdir()
            remove_empty_layout_parents(run_dir, tool)
    except OSError:
        pass


def remove_refused_sweep(tool: str) -> None:
    """A sweep whose every job was refused before it claimed its folder (a missing dataset), or that
    Hydra refused before its first job (``-m backbone=span,spam``), leaves no folder: the one it made
    holds only Hydra's ``multirun.yaml`` and the jobs' outcomes (:mod:`coz.run.sweep`), all printed."""
    import shutil

    folder, sweep.made_dir = sweep.made_dir, None
    try:
        if folder is not None and {p.name for p in folder.iterdir()} <= {"multirun.yaml", sweep.RECORDS}:
            shutil.rmtree(folder)
            remove_empty_layout_parents(folder, f"{tool}-sweep")
    except OSError:
        pass


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def remove_empty_layout_parents(run_dir: Path, tool: str) -> None:
    """Remove ``outputs/<tool>/<date>/``, then ``outputs/<tool>/``, then ``outputs/``, each only if
    empty, and only for a folder of the default layout below the current folder (``hydra.run.dir=``
    elsewhere: its parents are the user's)."""
    try:
        relative = run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return
    parts = relative.parts
    if len(parts) != 4 or parts[0] != "outputs" or parts[1] != tool or not _DATE.fullmatch(parts[2]):
        return
    for folder in (relative.parent, relative.parent.parent, relative.parent.parent.parent):
        try:
            folder.rmdir()  # fails on a folder that holds anything: another run's, a .gitkeep
        except OSError:
            return


def close_log_files_in(folder: Path) -> None:
    """Detach and close the logging handlers that write into ``folder`` (Hydra's job log): left
    attached, the next record logged in this process (a later in-process run, an API call) would try
    to reopen a file whose folder is gone and fail there."""
    folder = folder.resolve()
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            name = getattr(handler, "baseFilename", None)
            if name and Path(name).resolve().is_relative_to(folder):
                logger.removeHandler(handler)
                handler.close()


def report(jobs: Jobs) -> int:
    """List a sweep's failed jobs (those :mod:`coz.run.sweep` read back); the command's exit code."""
    for outcome in sweep.finished or []:
        jobs.add(*outcome)
    if jobs.count > 1 and jobs.failed:
        failed = [job for job in jobs.failed if job[1] != SKIPPED]
        partial = [job for job in jobs.failed if job[1] == SKIPPED]  # finished, some inputs skipped
        for listed, what in (
            (failed, "failed"),
            (partial, "finished but skipped some inputs (listed above)"),
        ):
            if listed:
                print(f"coz.{jobs.tool}: {len(listed)} of {jobs.count} jobs {what}:", file=sys.stderr)
            for folder, code, message in listed:
                print(f"  {folder} (exit {code}): {message}", file=sys.stderr)
    return jobs.exit_code()


def launcher_lost_a_job(err: BaseException) -> bool:
    """A job that died before it could report (killed, out of memory, a lost node): submitit, the
    launcher that ran it in a process of its own, raises when it finds no result."""
    return type(err).__module__.split(".")[0] == "submitit"


def lost_job_message(err: BaseException) -> str:
    # submitit's message names the job and its log folder; its traceback adds nothing
    return f"a sweep job ended without a result ({type(err).__name__}: {one_line(str(err))[:500]})"


def unparsable_argument(args: list[str]) -> str | None:
    """One line naming the first override Hydra's parser rejects, with the quoted form to use."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # flags (-m, --cfg job) and their values
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as err:
            key, _, value = arg.partition("=")
            reason = one_line(str(err)).split(" See https")[0]
            if "'" not in value:  # Hydra's quotes inside the shell's
                shell = f"'{key}=\"{value}\"'"
            else:
                shell = f'"{key}=\\"{value}\\""'
            wide = next((c for c in value if ord(c) > 127), None)
            why = (
                f"a value with a letter outside ASCII ({wide}) must be quoted for Hydra"
                if wide is not None
                else f"a value with = , ' ~ [ ] {{ }} must be quoted for Hydra ({reason})"
            )
            return f"cannot read the argument {arg!r}: {why}, e.g. {shell} in a shell (README: Runs, resume and exit codes)"
    return None
