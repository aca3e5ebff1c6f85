"""Reading a user's weight file: whatever is wrong with it is one line naming the option and the
file, never a library's traceback (and never torch's advice to load with ``weights_only=False``:
coz loads pickles only with ``weights_only=True``)."""

from __future__ import annotations

import re
import warnings
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
    """``load()``, with any failure turned into ``CozError("<option>=<path>: cannot load it (...)")``;
    a Git LFS pointer or an HTML page in place of the weights is named as such."""
    return _guarded(f"{option}={path}", path, load)


def safe_load(where: str, path: str | Path) -> object:
    """The contents of a weights file on the CPU, read without running any code from it: a
    ``.safetensors`` file with safetensors, any other with ``torch.load(weights_only=True)``. Every
    weights option of coz reads its file through here (or :func:`read_weights` for a library's own
    reader), so a damaged or unsafe file is one line starting with ``where`` (the option and file,
    e.g. ``backbone.weights=x.pth``), never a traceback or torch's advice to unpickle unsafely."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return _guarded(where, path, lambda: load_file(str(path), device="cpu"), "safetensors")
    import torch

    def load():
        with warnings.catch_warnings():  # "Detected pickle protocol 4": a note on the way to a refusal
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)

    return _guarded(where, path, load, "torch.save")


def torch_file(option: str, path: str | Path):
    """``<option>=<path>`` read by :func:`safe_load`."""
    return safe_load(f"{option}={path}", path)


def _guarded(where: str, path: str | Path, load: Callable[[], T], kind: str | None = None) -> T:
    if Path(path).exists():
        if problem := placeholder(path):
            raise CozError(f"{where}: {problem}")
    try:
        return load()
    except CozError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file fails in countless ways
        raise CozError(f"{where}: cannot load it ({reason(err, kind)})") from None


# torch's refusal names the first Python object the pickle would build: "GLOBAL argparse.Namespace"
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def reason(err: BaseException, kind: str | None = None) -> str:
    """What is wrong with a file, from its loader's error, in one line. A pickle that
    ``weights_only=True`` refuses holds Python objects, not just tensors: it is named as not a safe
    checkpoint, and torch's advice (load with ``weights_only=False``, or allowlist the object, both of
    which let the file run code) is never passed on. ``kind``: the format the loader expected."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch bolds part of its advice
    refused = "Weights only load failed" in text or "WeightsUnpickler" in text
    if refused and (found := _UNSAFE_GLOBAL.search(text)):
        return (
            f"not a safe checkpoint: it pickles {found[1]}, and coz never unpickles Python objects (that "
            "can run code); give a .safetensors file or a plain state dict of tensors"
        )
    if refused:  # a pickle opcode no torch.save of tensors uses, or bytes that are no pickle at all
        step = next((x.strip() for x in text.splitlines() if x.strip().startswith("Unsupported")), "")
        return f"not a readable {kind or 'torch.save'} file (WeightsUnpickler: {step or 'refused'})"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kind = kind or ("safetensors" if type(err).__name__ == "SafetensorError" else None)
    first = lines[0].split(". ")[0] if lines else ""  # torch's first sentence says it; the rest speculates
    line = f"{type(err).__name__}: {first}"[:300] if first else type(err).__name__
    return f"not a readable {kind} file ({line})" if kind else line


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
