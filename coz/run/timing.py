"""Wall-clock time per phase of a run (prompt extraction, SR, the rest), as in the paper's Table 3."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates seconds per named phase; ``other`` is the total minus the named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()  # GPU work is asynchronous: charge it to the phase that launched it
            self.seconds[name] += time.perf_counter() - start

    def summary(self) -> dict[str, float]:
        total = time.perf_counter() - self._start
        named = dict(self.seconds)
        return {
            **{f"{k}_s": round(v, 4) for k, v in named.items()},
            "other_s": round(total - sum(named.values()), 4),
            "total_s": round(total, 4),
        }


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
