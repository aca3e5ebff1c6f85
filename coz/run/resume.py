"""The resume check: may this config continue the run of a folder?

Rerunning a tool into a folder that holds an earlier run continues it. The rerun must ask for the
same results: every key must equal the earlier run's, except those that cannot change a result
(how many images go through together, CPU threads, the device, the logger: ``coz.run.tool.MAY_CHANGE``)
and the tool's own "how long / how spread" keys (its declaration's ``may_change``). Paths that resolve to the same file (``photos`` and ``./photos/``)
are equal. A refusal names every differing key with both values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from coz.errors import CozError, RunEnvironmentError

# keys holding a path: compared by the file they name
PATH_KEYS = ("input",)


def differences(
    earlier: dict[str, Any], now: dict[str, Any], skip: tuple[str, ...]
) -> list[tuple[str, Any, Any]]:
    """``(key, earlier value, new value)`` for every key that differs and is not (under) one of
    ``skip``, the keys that may change (:meth:`coz.run.tool.Tool.resume_keys`)."""
    old, new = _flatten(earlier), _flatten(now)
    found = []
    for key in sorted(set(old) | set(new)):
        if any(key == s or key.startswith(s + ".") for s in skip):
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if key in PATH_KEYS and a is not None and b is not None and _same_path(a, b):
            continue
        if a != b:
            found.append((key, a, b))
    return found


def check_resume(
    earlier: dict[str, Any] | None, now: dict[str, Any], skip: tuple[str, ...], run_dir: Path
) -> None:
    """Refuse to continue ``run_dir`` with a config that would change its results."""
    if earlier is None:
        return
    diffs = differences(earlier, now, skip)
    if diffs:
        listed = "; ".join(f"{key}: {a!r} before, {b!r} now" for key, a, b in diffs)
        raise CozError(
            f"{run_dir} holds a run with another config ({listed}); rerun with the earlier values to "
            "resume it, or choose another hydra.run.dir for a new run"
        )


def read_record(path: Path) -> dict[str, Any] | None:
    """A run file (``run.json``, ``job.json``) as a dict; None when absent; a corrupt one is an
    environment error naming it (coz writes them atomically, so only something else breaks them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RunEnvironmentError(f"{path}: cannot read the run file ({err.strerror})") from None
    try:
        record = json.loads(text)
    except ValueError as err:
        raise RunEnvironmentError(
            f"{path}: corrupt run file ({err}); move it away to start this folder afresh"
        ) from None
    if not isinstance(record, dict):
        raise RunEnvironmentError(f"{path}: corrupt run file (not a JSON object)")
    return record


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: config}


def _same_path(a: Any, b: Any) -> bool:
    try:
        return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))
    except (OSError, ValueError):
        return False
