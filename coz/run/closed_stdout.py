"""A closed stdout (``coz.zoom ... | head -1``) ends the run quietly, exit 141 (128 + SIGPIPE, what
a shell reports for a tool the closed pipe killed), instead of a "Broken pipe" error or logging's
tracebacks: :func:`guard` wraps ``sys.stdout`` so that every writer (print, the log handler
Hydra points at ``sys.stdout``) meets the same exit. A broken pipe elsewhere (a socket, a
subprocess) is not confused with it: the pipe must poll as closed.
"""

from __future__ import annotations

import os
import select
import stat
import sys
from typing import Any

from coz.run.exit_codes import STDOUT_CLOSED


def stdout_closed() -> bool:
    """True when whoever read our stdout has gone: a pipe whose reader closed polls as an error.
    False where that cannot be told (Windows, no stdout)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def exit_quietly() -> None:
    """Exit STDOUT_CLOSED without a word; later writes (Python's final flush too) go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    sys.exit(STDOUT_CLOSED)


class _Guarded:
    """``sys.stdout`` whose writes end the run quietly once the reader has gone."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._quiet_on_closed(self._stream.write, text)

    def flush(self) -> None:
        self._quiet_on_closed(self._stream.flush)

    def _quiet_on_closed(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            if not stdout_closed():
                raise
            exit_quietly()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard() -> None:
    """Wrap ``sys.stdout`` when it is a pipe (a terminal or a file cannot be closed under us)."""
    if isinstance(sys.stdout, _Guarded):
        return
    try:
        if not stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
            return
    except (AttributeError, OSError, ValueError):
        return  # no real stdout (pytest's capture)
    sys.stdout = _Guarded(sys.stdout)
