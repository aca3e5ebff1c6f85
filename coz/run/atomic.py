"""Atomic file writes: a reader (or a crash) never sees a half-written output."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file keeps the target's suffix so writers that infer the format from the
    name (PIL, safetensors) behave. On error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short prefix: the temporary name must fit the file-name limit wherever ``path``'s name does
    # (coz.run.folder removes these names when a killed run is resumed)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem[:32]}.", suffix=f".tmp{path.suffix[:16]}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        # again: writers such as safetensors replace the file with a new 0600 one
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def link_or_copy_atomic(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make ``path`` a hard link to ``source`` (a copy where links are not possible), atomically."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not supported
            shutil.copyfile(source, tmp)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def usual_mode(path: str | os.PathLike) -> None:
    """The mode a plain ``open()`` would give (0644 under the usual umask)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
