"""Seeded construction, for every model whose random weights must not depend on what ran before:
the tiny twins' base weights, a fresh LoRA, the training-time tiny CNNs. What is built inside
``with seeded(seed):`` draws from ``seed`` alone, and the caller's random stream is left where it was
(building a model changes no other draw of the run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw from ``torch.manual_seed(seed)`` inside; restore the CPU random state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
