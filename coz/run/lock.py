"""One process per run folder: an OS lock on ``<run>/.coz.lock``, through the ``filelock`` library
(``flock`` on POSIX, ``msvcrt`` locking on Windows), so ``import coz`` works wherever Python does.

The operating system drops the lock when its process ends, however it ends (kill -9 included), so a
folder is never left locked by a dead run and no stale-lock clean-up is needed. The holder writes
its pid into the file for the refusal message (filelock 4 never truncates a held lock's file).
Re-entrant within a process: the CLI wrapper and the tool's ``run()`` may both claim the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from coz.errors import CozError, RunEnvironmentError

LOCK_NAME = ".coz.lock"

_held: dict[str, list] = {}  # resolved folder -> [FileLock, depth]


def acquire(run_dir: Path) -> bool:
    """Lock ``run_dir`` (which must exist) for this process; False if this process already held it.
    Another process holding it: a CozError naming the folder and that process."""
    key = str(run_dir.resolve())
    if key in _held:
        _held[key][1] += 1
        return False
    path = run_dir / LOCK_NAME
    file_lock = FileLock(path, mode=0o644)
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        raise CozError(
            f"{run_dir} is in use by another coz run (pid {_owner(path)}); wait for it to finish "
            "or choose another hydra.run.dir"
        ) from None
    except OSError as err:
        raise RunEnvironmentError(f"{path}: cannot lock the run folder ({err.strerror or err})") from None
    try:
        _write_owner(path)
    except OSError as err:
        file_lock.release()
        raise RunEnvironmentError(f"{path}: cannot write the run folder's lock ({err.strerror})") from None
    _held[key] = [file_lock, 1]
    return True


def release(run_dir: Path) -> None:
    key = str(run_dir.resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        entry[0].release()


def held(run_dir: Path) -> bool:
    return str(run_dir.resolve()) in _held


def _write_owner(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def _owner(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip() or "?"
    except OSError:  # Windows refuses to read a locked region
        return "?"
