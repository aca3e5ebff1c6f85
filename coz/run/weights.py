"""Reading a user's weight file: whatever is wrong with it is one line naming the option and the
file, never a library's traceback (and never torch's advice to load with ``weights_only=False``:
coz loads pickles only with ``weights_only=True``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from coz.errors import CozError

T = TypeVar("T")


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def placeholder(path: str | Path) -> str | None:
    """What stands in for the weights at ``path`` (a file, or each file of a folder), if anything: a
    Git LFS pointer (a clone without ``git lfs``) or an HTML page (a download page saved as the file)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        try:
            with file.open("rb") as f:
                head = f.read(512)
        except OSError:
            continue
        name = "" if file == path else f" ({file.name})"
        if head.startswith(LFS_POINTER):
            oid = next((w for w in head.split() if w.startswith(b"sha256:")), b"").decode()
            return (
                f"a Git LFS pointer{name}, not the weights ({oid or 'no oid'}): "
                "fetch the file itself (`git lfs pull` in its clone, or coz-fetch)"
            )
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if start.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")):
            return (
                f"an HTML page{name}, not the weights (a download or login page saved in its place): "
                "fetch the file itself (coz-fetch checks what it gets)"
            )
    return None


def refuse_placeholder(option: str, path: str | Path) -> None:
    if problem := placeholder(path):
        raise CozError(f"{option}={path}: {problem}")


def read_weights(option: str, path: str | Path, load: Callable[[], T]) -> T:
    """``load()``, with any failure turned into ``CozError("<option>=<path>: cannot load ...")``;
    a Git LFS pointer or an HTML page in place of the weights is named as such."""
    if Path(path).exists():
        refuse_placeholder(option, path)
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


def refuse_nonfinite(where: str, weights: object) -> None:
    """One line if any floating-point tensor in ``weights`` (a tensor, or dicts / lists of them) holds
    a NaN or an Inf: such weights (a training run that diverged) would zoom every photo to black.
    ``where`` names the option and file, e.g. ``backbone.weights=lora.safetensors``."""
    from coz.run.finite import first_nonfinite

    if (bad := first_nonfinite(_tensors(weights))) is not None:
        raise CozError(
            f"{where}: tensor {bad} holds NaN or Inf values (weights of a training run that diverged?)"
        )


def _tensors(obj: object, path: str = ""):
    """(name, tensor) of every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]")
    elif hasattr(obj, "is_floating_point"):
        yield path or "(the file's tensor)", obj


def mismatch(expected: dict[str, tuple[int, ...]], given: dict[str, object], show: int = 2) -> str | None:
    """How the tensors ``given`` (name -> tensor) differ from the ``expected`` names and shapes, in
    words; None when they match. The one state-dict check of every loader: each names its own file."""
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        return (
            f"{len(missing)} tensors missing (e.g. {missing[:show]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:show]})"
        )
    for name, shape in expected.items():
        found = tuple(getattr(given[name], "shape", ()))
        if found != tuple(shape):
            return f"{name} has shape {found}, expected {tuple(shape)}"
    return None


def shapes(state: dict[str, object]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a state dict (the ``expected`` of :func:`mismatch`)."""
    return {name: tuple(tensor.shape) for name, tensor in state.items()}
