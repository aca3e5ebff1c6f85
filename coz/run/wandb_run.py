"""The one Weights & Biases layer of the four tools.

``logger=csv|wandb|both|none`` (``conf/shared/logger/``) chooses where a run's numbers go; every tool asks
:func:`logger_kinds` and, for W&B, opens its run with :func:`start_wandb`, so all runs look alike:

- ``job_type`` is the tool (``zoom``, ``evaluate``, ``train_sr``, ``train_grpo``);
- ``group`` is ``logger.group`` if set, else the sweep (its folder name) in a ``-m`` run, else the
  ``experiment=`` preset, else the tool: runs of one sweep or preset sit together;
- ``tags`` are ``logger.tags`` plus the Hydra choices (``backbone:sd3``, ``prompt:vlm``, ...);
- ``config`` is the resolved config;
- the run id is kept in ``<run>/wandb_id.txt``: rerunning into the folder (a resume) continues the
  same W&B run instead of starting a new one.

W&B stays offline unless ``WANDB_MODE`` says otherwise (``logger.mode`` is used only when it is
unset); ``wandb sync <run>/wandb/offline-run-*`` uploads later.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from coz.errors import CozError

LOGGERS = {"csv": {"csv"}, "wandb": {"wandb"}, "both": {"csv", "wandb"}, "none": set()}


def logger_kinds(logger_cfg) -> set[str]:
    """``{"csv"}``, ``{"wandb"}``, both or neither; an unknown ``logger=`` is one line."""
    name = str(logger_cfg.name) if logger_cfg is not None else "none"
    if name not in LOGGERS:
        raise CozError(f"logger={name}: use one of {', '.join(LOGGERS)}")
    return LOGGERS[name]


def run_id(run_dir: Path) -> str:
    """The folder's W&B run id, made once and kept in ``wandb_id.txt`` (a resume reuses it). The file
    appears whole and only once (a hard link of a finished temporary file), so processes that start
    together (DDP ranks) all read the first one's id."""
    path = Path(run_dir) / "wandb_id.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".wandb_id.{os.getpid()}.{secrets.token_hex(2)}")
        tmp.write_text(secrets.token_hex(4))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: its id holds
        finally:
            tmp.unlink()
    return path.read_text().strip()


def choice_tags() -> list[str]:
    """``group:option`` for every Hydra choice of this job (``backbone:sd3``)."""
    from coz.run.runtime import hydra_choices

    return [f"{group.split('/')[-1]}:{option}" for group, option in hydra_choices().items() if option]


def default_group(tool: str) -> str:
    """The sweep folder in a ``-m`` run, else the ``experiment=`` preset, else the tool."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from coz.run.runtime import hydra_choices

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    preset = hydra_choices().get(f"{tool}/experiment") or hydra_choices().get("experiment")
    return f"{tool}/{preset}" if preset else tool


def wandb_init_args(
    logger_cfg,
    run_dir: Path,
    tool: str,
    config: dict[str, Any],
    *,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The keyword arguments of ``wandb.init`` (or Lightning's ``WandbLogger``) for a run of ``tool``
    in ``run_dir``."""
    run_dir = Path(run_dir)
    return {
        "project": str(logger_cfg.get("project") or "coz"),
        "entity": logger_cfg.get("entity"),
        "mode": os.environ.get("WANDB_MODE", str(logger_cfg.get("mode") or "offline")),
        "dir": str(run_dir),
        "id": run_id(run_dir),
        "resume": "allow",
        "name": name or run_dir.name,
        "group": str(logger_cfg.get("group") or group or default_group(tool)),
        "job_type": tool,
        "tags": list(dict.fromkeys([*(logger_cfg.get("tags") or []), *tags, *choice_tags()]))[:64],
        "config": config,
    }


def start_wandb(logger_cfg, run_dir: Path, tool: str, config: dict[str, Any], **kwargs):
    """Open (or, after a resume, continue) the W&B run of ``run_dir``; see :func:`wandb_init_args`."""
    import wandb

    args = wandb_init_args(logger_cfg, run_dir, tool, config, **kwargs)
    return wandb.init(**args, reinit="finish_previous")
