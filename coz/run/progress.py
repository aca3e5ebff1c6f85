"""One progress convention for every coz tool.

A :class:`Progress` counts the unit the user waits on (image-steps, tiles, image x scale, optimiser
steps), with its rate and the time left. On a terminal it is a tqdm bar; where stderr is not a
terminal (a log file, CI, a SLURM job) redrawing a bar writes garbage, so it prints a plain line
each time another ``every_percent`` of the work is done (at most one per ``min_interval_s``), and
once at the end:

    zoom: 8/16 image-steps (50%), 1.9 image-steps/s, 0:00:04 left [astronaut]

``COZ_PROGRESS=bar|lines|off`` overrides the choice (``off``: nothing at all).

Tests read what was counted from :data:`finished`: every closed progress appends its description,
unit, total, count and starting count there (a bounded record, cleared by the tests).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Counted:
    """What a closed progress counted: ``n`` of ``total`` units, ``initial`` of them before it began."""

    desc: str
    unit: str
    total: int | None
    n: int
    initial: int


#: The last closed progresses, oldest first (for tests and post-mortems).
finished: deque[Counted] = deque(maxlen=200)


def _style(stream: TextIO) -> str:
    style = os.environ.get("COZ_PROGRESS", "").strip().lower()
    if style in ("bar", "lines", "off"):
        return style
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def format_seconds(seconds: float) -> str:
    """0:00:42 / 1:05:07; '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts ``total`` units of ``unit`` (``total=None``: unknown, no percentage or time left).

    ``initial`` units were done before (a resumed run counts on from there: the rate and the time
    left are measured on this run's units only). ``enabled=False`` shows nothing (other DDP ranks)
    but still counts. ``leave=False`` removes a finished terminal bar (nested bars such as tiles).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        initial: int = 0,
        enabled: bool = True,
        leave: bool = True,
        every_percent: float = 10.0,
        min_interval_s: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = int(initial)
        self.stream = stream or sys.stderr
        self.style = _style(self.stream) if enabled else "off"
        self.every = max(float(every_percent), 0.1)
        self.min_interval_s = float(min_interval_s)
        self._last_line_at = -math.inf
        self.postfix = ""
        self.started = time.perf_counter()
        self._next_line = self._percent() + self.every if total else math.inf
        self._bar = None
        self._closed = False
        if self.style == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=self.initial,
                desc=desc,
                unit=f" {unit}",
                leave=leave,
                file=self.stream,
                dynamic_ncols=True,
            )

    # ---- counting ---------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.style == "lines" and self.total and self._percent() >= self._next_line:
            if time.perf_counter() - self._last_line_at >= self.min_interval_s:
                self._print_line()
                while self._next_line <= self._percent():
                    self._next_line += self.every

    def set_postfix(self, text: str = "", **values: float | str) -> None:
        """What the bar shows after the counts: a short text and/or ``name=value`` pairs (losses,
        rewards); floats are shown with 4 significant digits."""
        parts = [text] if text else []
        parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
        self.postfix = ", ".join(parts)
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix, refresh=False)

    def write(self, message: str) -> None:
        """A line of its own that does not break the bar."""
        if self.style == "off":
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.style == "lines" and self.n > self.initial and self._last_printed != self.n:
            self._print_line()
        finished.append(Counted(self.desc, self.unit, self.total, self.n, self.initial))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- numbers ----------------------------------------------------------------------------
    def rate(self) -> float:
        """Units per second of this run (units done before ``initial`` are not counted)."""
        elapsed = time.perf_counter() - self.started
        return (self.n - self.initial) / elapsed if elapsed > 0 else 0.0

    def seconds_left(self) -> float:
        rate = self.rate()
        if not self.total or rate <= 0:
            return math.nan
        return max(self.total - self.n, 0) / rate

    def line(self) -> str:
        """``desc: n/total unit (p%), r unit/s, h:mm:ss left [postfix]``."""
        if self.total:
            counts = f"{self.n}/{self.total} {self.unit} ({self._percent():.0f}%)"
        else:
            counts = f"{self.n} {self.unit}"
        rate = self.rate()
        text = (
            f"{self.desc}: {counts}, {rate:.0f} {self.unit}/s"
            if rate >= 100
            else f"{self.desc}: {counts}, {rate:.3g} {self.unit}/s"
        )
        if self.total:
            text += f", {format_seconds(self.seconds_left())} left"
        return text + (f" [{self.postfix}]" if self.postfix else "")

    _last_printed: int | None = None

    def _percent(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def _print_line(self) -> None:
        self._last_printed = self.n
        self._last_line_at = time.perf_counter()
        print(self.line(), file=self.stream, flush=True)
