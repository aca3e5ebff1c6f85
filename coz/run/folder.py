"""Claiming a run folder: made if missing, locked for this process before anything is written,
cleared of the temporary files a killed run left, and each attempt's Hydra config kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coz.errors import RunEnvironmentError
from coz.run import lock

# coz.run.atomic's temporary names: ".<stem>.<8 random>.tmp<suffix>"
_TEMP = re.compile(r"^\..*\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")


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
def claim(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``run_dir`` for the duration: a second process is refused in one line; the lock dies
    with this process. The first claim of a process removes leftover temporary files."""
    run_dir = make_run_dir(Path(run_dir))
    if not is_main_process():
        yield run_dir
        return
    first = lock.acquire(run_dir)
    try:
        if first:
            remove_leftovers(run_dir)
        yield run_dir
    finally:
        lock.release(run_dir)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the hidden temporary files of writes a kill interrupted (the lock guarantees no live
    writer); returns what was removed."""
    removed = []
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
    from coz.run.atomic import write_text_atomic

    write_text_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text_atomic(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})))
    write_text_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(hydra.overrides.task))
    return folder
