"""Claiming a run folder: made if missing, refused if others may write into it, locked for this
process before anything is written, owned by the tool that made it, cleared of the temporary files a
killed run left, and each attempt's Hydra config kept.

Ownership: the first claim writes the tool's name into ``.coz-tool``; a claim by any other tool is
refused in one line naming both, so ``coz.evaluate`` never rewrites a ``coz.zoom`` run's ``run.json``.
A folder an older coz made (no ``.coz-tool``) belongs to the tool its run files name (:func:`older_owner`).
Safety: a folder anyone may write into (mode o+w), or one holding a symbolic link, could send the
run's writes elsewhere (a planted ``run.json`` -> ``~/.bashrc``), so both are refused before the
first write.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coz.errors import CozError, RunEnvironmentError
from coz.run import lock

# coz.run.atomic's temporary names: ".<stem>.<8 random>.tmp<suffix>"
_TEMP = re.compile(r"^\..*\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")

OWNER_NAME = ".coz-tool"  # the name of the tool that made the folder

# an attempt's config folder is written under this prefix, then renamed: a kill never leaves a
# ``.hydra-resumed-N`` without its files
ATTEMPT_TEMP = ".hydra-attempt-"


def is_main_process() -> bool:
    """False in the extra processes a launcher starts into the same run folder (DDP ranks > 0):
    the first process holds the folder for all of them."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def make_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir``; a path that cannot be a folder is an environment error naming it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunEnvironmentError(f"{run_dir}: the run folder is a file; choose another hydra.run.dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunEnvironmentError(
            f"{err.filename or run_dir}: cannot create the run folder ({err.strerror})"
        ) from None
    return run_dir


@contextmanager
def claim(run_dir: str | os.PathLike, tool: str | None = None) -> Iterator[Path]:
    """Hold ``run_dir`` for ``tool`` (``zoom``, ``evaluate``...) for the duration: a second process,
    another tool's folder, a world-writable folder or a symbolic link inside it is refused in one
    line; the lock dies with this process. The first claim of a process removes leftover temporary
    files."""
    run_dir = make_run_dir(Path(run_dir))
    if not is_main_process():
        yield run_dir
        return
    check_not_shared(run_dir)
    first = lock.acquire(run_dir)
    try:
        if first:
            if tool is not None:
                check_owner(run_dir, tool)
            remove_leftovers(run_dir)
        yield run_dir
    finally:
        lock.release(run_dir)


def check_not_shared(run_dir: Path) -> None:
    """Refuse a run folder others may write into, or one holding a symbolic link (wandb's own
    ``latest-run`` links aside): either could redirect this run's writes."""
    mode = run_dir.stat().st_mode
    if mode & stat.S_IWOTH:
        raise RunEnvironmentError(
            f"{run_dir}: the run folder is writable by every user (mode {stat.filemode(mode)}); "
            f"run chmod o-w {run_dir} or choose another hydra.run.dir"
        )
    for folder, dirs, files in os.walk(run_dir):
        if Path(folder) == run_dir:
            dirs[:] = [d for d in dirs if d != "wandb"]  # wandb links its runs; wandb's business
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                raise RunEnvironmentError(
                    f"{path}: a symbolic link inside the run folder could redirect its writes; "
                    "remove it or choose another hydra.run.dir"
                )


def check_owner(run_dir: Path, tool: str) -> None:
    """Refuse a folder another tool made; mark a new one as ``tool``'s."""
    from coz.run.atomic import write_text_atomic

    owner_file = run_dir / OWNER_NAME
    try:
        owner = owner_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        owner = older_owner(run_dir) or tool
        if owner == tool:
            write_text_atomic(owner_file, tool + "\n")
            return
    except OSError as err:
        raise RunEnvironmentError(
            f"{owner_file}: cannot read the run folder's owner ({err.strerror})"
        ) from None
    if owner != tool:
        raise CozError(
            f"{run_dir} is a coz.{owner} run folder: coz.{tool} cannot run in it; "
            "choose another hydra.run.dir"
        )


def older_owner(run_dir: Path) -> str | None:
    """The tool that made a folder before ``.coz-tool`` existed, from the files only it writes:
    ``run.json``'s ``tool`` (every tool's since run.json has one shape; coz.train_sr's before),
    ``split.json`` (coz.train_grpo), ``job.json`` (coz.evaluate), else a ``run.json`` (coz.zoom);
    None for a folder of none of them."""
    import json

    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        record = None
    except (OSError, ValueError):
        record = {}  # unreadable: the tool's own resume check names it
    if isinstance(record, dict) and record.get("tool"):  # "coz.train_sr" before run.json had one shape
        return str(record["tool"]).removeprefix("coz.")
    if (run_dir / "split.json").is_file():
        return "train_grpo"
    if (run_dir / "job.json").is_file():
        return "evaluate"
    return "zoom" if record is not None else None


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the hidden temporary files of writes a kill interrupted (the lock guarantees no live
    writer); returns what was removed."""
    removed = []
    for partial in run_dir.glob(ATTEMPT_TEMP + "*"):
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    for folder, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d != "wandb"]  # wandb's own files are wandb's business
        for name in files:
            if _TEMP.match(name):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def record_attempt(run_dir: Path, cfg) -> Path | None:
    """Keep this attempt's Hydra config beside the earlier ones: ``.hydra/`` for the first attempt,
    ``.hydra-resumed-1/``, ``-2/``... for each resume (Hydra itself would overwrite ``.hydra/``, so
    the tools' configs set ``hydra.output_subdir: null`` and coz writes it here, after the lock and
    the resume check)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or not is_main_process():
        return None
    folder, n = run_dir / ".hydra", 0
    while folder.exists():
        n += 1
        folder = run_dir / f".hydra-resumed-{n}"
    hydra = HydraConfig.get()
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})),
        "overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
    }
    partial = run_dir / f"{ATTEMPT_TEMP}{secrets.token_hex(4)}"
    partial.mkdir()  # the usual permissions (the folder lock keeps other writers out)
    try:
        for name, text in files.items():
            (partial / name).write_text(text, encoding="utf-8")
        os.rename(partial, folder)  # all three files or none, whenever the process dies
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder
