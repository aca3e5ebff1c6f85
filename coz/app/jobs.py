"""One job at a time, in a thread of its own, that its page handler can watch and cancel.

Gradio's queue lets one zoom event run at a time, but a cancelled event leaves its thread behind:
Gradio stops waiting for it, not computing it. So the computing itself takes a lock (the next job
waits for the last one to notice its cancellation), and a cancelled job stops at its next step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coz.errors import CozError

#: held while a job computes: one job at a time, whatever route or event started it
_COMPUTE = threading.Lock()
#: the jobs not yet ended (a cancelled one goes on to its next step after Gradio forgot it)
_LIVE: set[Job] = set()
_LIVE_LOCK = threading.Lock()


def held_files() -> set[Path]:
    """The uploads the jobs not yet ended hold: the upload sweep leaves them."""
    with _LIVE_LOCK:
        return {job.holds for job in _LIVE if job.holds is not None}


class JobCancelled(CozError):
    """The job's user cancelled it (or left): raised at its next step."""


class Job:
    """``work(report, cancelled)`` in a thread: ``report(done, total, desc)`` records progress (and
    raises :class:`JobCancelled` once :meth:`cancel` was called); :meth:`wait` returns the progress
    when it changes, :attr:`result` / :attr:`error` when it ends. ``holds``: its upload, kept until
    it ends."""

    def __init__(
        self, work: Callable[[Callable[[int, int, str], None]], Any], holds: Path | None = None
    ) -> None:
        self._work = work
        self.holds = holds
        self._cancelled = threading.Event()
        self._changed = threading.Condition()
        self.progress: tuple[int, int, str] = (0, 1, "waiting for the previous job to stop")
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="coz-app-job", daemon=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout: float) -> tuple[int, int, str]:
        """Block until the progress changes or the job ends (or ``timeout`` s); the progress."""
        with self._changed:
            seen = self.progress
            self._changed.wait_for(lambda: self.done or self.progress != seen, timeout)
            return self.progress

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _report(self, done: int, total: int, desc: str) -> None:
        if self._cancelled.is_set():
            raise JobCancelled("cancelled")
        with self._changed:
            self.progress = (done, total, desc)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            with _COMPUTE:
                self._report(0, 1, "loading")
                self.result = self._work(self._report)
        except BaseException as err:  # handed to the page: a bad input, a cancel, or a bug
            self.error = err
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(self)
            with self._changed:
                self.done = True
                self._changed.notify_all()
