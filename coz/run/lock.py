"""One process per run folder: an OS lock (``fcntl.flock``) on ``<run>/.coz.lock``.

The kernel drops the lock when its process ends, however it ends (kill -9 included), so a folder is
never left locked by a dead run and no stale-lock clean-up is needed. Re-entrant within a process:
the CLI wrapper and the tool's ``run()`` may both claim the same folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from coz.errors import CozError, RunEnvironmentError

LOCK_NAME = ".coz.lock"

_held: dict[str, list[int]] = {}  # resolved folder -> [fd, depth]


def acquire(run_dir: Path) -> bool:
    """Lock ``run_dir`` (which must exist) for this process; False if this process already held it.
    Another process holding it: a CozError naming the folder and that process."""
    key = str(run_dir.resolve())
    if key in _held:
        _held[key][1] += 1
        return False
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunEnvironmentError(f"{path}: cannot create the run folder's lock ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise CozError(
                f"{run_dir} is in use by another coz run (pid {owner}); wait for it to finish "
                "or choose another hydra.run.dir"
            ) from None
        raise RunEnvironmentError(f"{path}: cannot lock the run folder ({err.strerror})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = [fd, 1]
    return True


def release(run_dir: Path) -> None:
    key = str(run_dir.resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        os.close(entry[0])  # closing the descriptor releases the lock


def held(run_dir: Path) -> bool:
    return str(run_dir.resolve()) in _held
