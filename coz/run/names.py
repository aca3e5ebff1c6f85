"""Output names for input files: one folder (and one row key) per input, never two inputs in one.

A name is the file stem (``photo.jpg`` -> ``photo``). Where stems clash, ignoring case as macOS and
Windows file systems do (``a.png``, ``a.PNG``, ``A.jpg``), the extension is added as typed
(``a_png``, ``a_PNG``, ``A_jpg``); a name still taken, case-insensitively (by another input's stem,
e.g. ``a_png.png``, or by an earlier name), gets ``~2``, ``~3``... Names are cut so that ``<name>.png`` fits the usual
255-byte file-name limit. The same input list always gives the same names, so resumes find their work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# <name>.png (scales/x4/<name>.png) must fit 255 bytes
MAX_NAME_BYTES = 240


def output_names(paths: list[Path]) -> list[str]:
    """One distinct output name per path, in the order given."""
    stems = [_fit(p.stem) for p in paths]
    counts = _counts(s.lower() for s in stems)
    used = {s.lower() for s in stems if counts[s.lower()] == 1}  # a stem of its own stays as it is
    names = []
    for stem, path in zip(stems, paths, strict=True):
        if counts[stem.lower()] == 1:
            names.append(stem)
            continue
        base = _fit(f"{stem}_{path.suffix.lstrip('.')}")
        candidate, k = base, 1
        while candidate.lower() in used:
            k += 1
            candidate = _fit(base, suffix=f"~{k}")
        used.add(candidate.lower())
        names.append(candidate)
    return names


def _counts(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _fit(name: str, suffix: str = "") -> str:
    """``name + suffix`` within MAX_NAME_BYTES; a cut name keeps a hash of the whole, so two long
    names that differ only at the end stay apart."""
    if len((name + suffix).encode()) <= MAX_NAME_BYTES:
        return name + suffix
    tag = "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len((tag + suffix).encode())
    cut = name.encode()[:room].decode(errors="ignore")
    return cut + tag + suffix
