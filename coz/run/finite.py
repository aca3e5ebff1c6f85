"""NaN and Inf: no file holding one is written or loaded (a NaN LoRA zooms every photo to black
without a word), and training stops at the first one (:mod:`coz.run.divergence`).

:func:`first_nonfinite` is the one test, used by the checkpoint writer, the weight loaders and the
training check. It imports nothing of coz.run, so every one of them may import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def first_nonfinite(tensors: Mapping[str, object] | Iterable[tuple[str, object]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an Inf, else None."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, value in items:
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value.detach()).all())
        ):
            return str(name)
    return None
