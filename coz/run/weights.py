"""Reading a user's weight file: whatever is wrong with it is one line naming the option and the
file, never a library's traceback (and never torch's advice to load with ``weights_only=False``:
coz loads pickles only with ``weights_only=True``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from coz.errors import CozError

T = TypeVar("T")


def read_weights(option: str, path: str | Path, load: Callable[[], T]) -> T:
    """``load()``, with any failure turned into ``CozError("<option>=<path>: cannot load ...")``."""
    try:
        return load()
    except CozError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file fails in countless ways
        raise CozError(f"{option}={path}: cannot load it ({reason(err)})") from None


def torch_file(option: str, path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, failing in one line."""
    import torch

    return read_weights(option, path, lambda: torch.load(path, map_location="cpu", weights_only=True))


def reason(err: BaseException) -> str:
    """The telling line of a loader's error: torch's weights-only refusals are paragraphs whose
    useful line names the unsupported content; its advice to unpickle unsafely is dropped."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "WeightsUnpickler" not in line] or lines
    line = next((x for x in lines if "Unsupported" in x), lines[0] if lines else "")
    return f"{type(err).__name__}: {line}"[:300] if line else type(err).__name__
