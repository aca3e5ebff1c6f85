"""The results a study compares: zoom run folders, or the jobs of evaluate sweeps, one method each.

A *run* is a folder holding ``images/<name>/zoom.json`` (``coz.zoom`` always writes it, ``coz.evaluate``
with ``report.save_states=true``); a *sweep* is a folder whose subfolders are runs. Each run is one
method, named by the overrides that tell the runs apart (``prompt=vlm_ar1``, ``prompt=vlm``,
``prompt=vlm prompt.adapter=ckpt``), read from the run's ``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coz.errors import CozError

# overrides that say how or where a run ran, not what it computed: never part of a method's name
_NOT_METHOD = re.compile(
    r"^(input|batch_size|threads|device|logger|seed)$|^(hydra|save|report|trainer|shard)\."
)


@dataclass
class Run:
    folder: Path
    overrides: dict[str, str]  # key -> value, as typed (``prompt=vlm``)
    choices: dict[str, str]  # Hydra's group choices, from run.json
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, from run.json
    images: dict[str, Path] = field(default_factory=dict)  # name -> images/<name>/
    method: str = ""


def is_run(folder: Path) -> bool:
    return any((folder / "images").glob("*/zoom.json"))


def find_runs(paths: list[str]) -> list[Run]:
    """Every run under ``paths`` (``from=``), in the order given (a sweep's jobs by number); a path
    that is neither a run nor a sweep of runs is one line naming it."""
    runs: list[Run] = []
    for text in paths:
        path = Path(str(text)).expanduser()
        if not path.is_dir():
            raise CozError(f"from={text}: no such folder")
        if is_run(path):
            runs.append(read_run(path))
            continue
        jobs = sorted((p for p in path.iterdir() if p.is_dir()), key=_job_order)
        found = [read_run(job) for job in jobs if is_run(job)]
        if not found:
            hint = ""
            if (path / "rows").is_dir() or any((job / "rows").is_dir() for job in jobs):
                hint = " (an evaluate job keeps its zoom states only with report.save_states=true)"
            raise CozError(
                f"from={text}: neither a zoom run folder (images/<name>/zoom.json) nor a sweep of them{hint}"
            )
        runs.extend(found)
    folders = [run.folder.resolve() for run in runs]
    if twice := next((f for i, f in enumerate(folders) if f in folders[:i]), None):
        raise CozError(f"from=: {twice} is given twice; each run is one method")
    if len(runs) < 2:
        raise CozError(
            f"from={','.join(map(str, paths))}: found {len(runs)} run; a study compares two or more"
        )
    name_methods(runs)
    return runs


def _job_order(path: Path) -> tuple[int, str]:
    number = re.match(r"^(\d+)-", path.name)  # Hydra's sweep subfolders: <job number>-<overrides>
    return (int(number[1]) if number else 1 << 30, path.name)


def read_run(folder: Path) -> Run:
    overrides: dict[str, str] = {}
    listed = folder / ".hydra" / "overrides.yaml"
    if listed.is_file():
        from omegaconf import OmegaConf

        for item in OmegaConf.to_container(OmegaConf.load(listed)) or []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value.strip("'\"")
    choices: dict[str, str] = {}
    config: dict[str, Any] = {}
    record = folder / "run.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            choices = {k: str(v) for k, v in (data.get("choices") or {}).items()}
            config = data.get("config") or {}
        except (ValueError, AttributeError):
            raise CozError(f"{record}: not a run record (corrupt JSON)") from None
    images = {p.parent.name: p.parent for p in sorted((folder / "images").glob("*/zoom.json"))}
    return Run(folder=folder, overrides=overrides, choices=choices, config=config, images=images)


def name_methods(runs: list[Run]) -> None:
    """Name each run by the overrides whose values differ between the runs, in the order first typed;
    a group no run overrode differently is named by its choice. Identical names get the folder's."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys and not _NOT_METHOD.search(k)]

    def value(run: Run, key: str) -> str | None:
        if key in run.overrides:
            return run.overrides[key]
        return run.choices.get(key) or configured(run.config, key)

    differing = [k for k in keys if len({value(run, k) for run in runs}) > 1]
    for run in runs:
        parts = [f"{k}={value(run, k)}" for k in differing if k in run.overrides or _is_group(run, k)]
        run.method = " ".join(parts) or run.folder.name
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.method] = seen.get(run.method, 0) + 1
    for run in runs:
        if seen[run.method] > 1:
            run.method = f"{run.method} ({run.folder.name})".strip()


def configured(config: dict[str, Any], key: str) -> str | None:
    """``key`` (dotted) of a resolved config; a config group's node by its ``name``."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get("name")
    return None if node is None else str(node)


def _is_group(run: Run, key: str) -> bool:
    """A config group (``prompt``, ``backbone``): named even where the run kept its default."""
    node = run.config.get(key) if "." not in key else None
    return key in run.choices or (isinstance(node, dict) and "name" in node)


def zoom_record(run: Run, name: str) -> dict[str, Any]:
    path = run.images[name] / "zoom.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CozError(f"{path}: cannot read the zoom record ({err})") from None
    if record.get("full"):
        raise CozError(f"{run.folder}: a zoom=full run; a study compares zoom chains (square scale-states)")
    return record
