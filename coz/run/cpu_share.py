"""Share the CPU cores fairly between coz processes running at the same time.

Each process that runs a backbone on the CPU registers its pid in a folder of the user cache.
Before every backbone call it recounts the live processes and uses ``cores // live`` threads,
so two concurrent zooms on a 2-core machine each use 1 thread instead of both using 2 (which
oversubscribes the cores and makes both slower than running them one after the other).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from coz.run.paths import cache_dir


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup CPU affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class CpuShare:
    """Registers this process; ``refresh()`` sets torch's thread count to this process's share.

    With a fixed ``threads`` the count is never changed (the user's override wins). ``close()`` puts
    torch's thread count back as it found it: a run called from Python (the API, a notebook, a test)
    leaves the caller's threads, and so its numerics, as they were.
    """

    def __init__(self, threads: int | None = None, folder: Path | None = None) -> None:
        self.fixed = threads
        self.cores = available_cores()
        self.folder = folder or cache_dir() / "cpu-share"
        self.token: Path | None = None
        self.threads_before = torch.get_num_threads()
        if threads is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            token = self.folder / str(os.getpid())
            if not token.exists():  # else this process is registered already (an outer share keeps it)
                token.touch()
                self.token = token
        self.refresh()

    def live_processes(self) -> int:
        live = 0
        for entry in self.folder.iterdir():
            if not entry.name.isdigit():
                continue
            if _alive(int(entry.name)):
                live += 1
            else:
                entry.unlink(missing_ok=True)  # a process that died without cleaning up
        return max(1, live)

    def refresh(self) -> int:
        """Set and return this process's thread count."""
        n = self.fixed if self.fixed is not None else max(1, self.cores // self.live_processes())
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n

    def close(self) -> None:
        if self.token is not None:
            self.token.unlink(missing_ok=True)
            self.token = None
        if torch.get_num_threads() != self.threads_before:
            torch.set_num_threads(self.threads_before)

    def __enter__(self) -> CpuShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
