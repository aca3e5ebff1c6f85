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
unset); ``wandb sync <run>/wandb/offline-run-*`` uploads later. :func:`check_wandb` runs before a
tool writes anything: an unknown ``WANDB_MODE`` is one line (exit 2), and an online run whose W&B
server cannot be reached is one line within seconds (exit 3), not wandb's silent 90-s wait and
traceback.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from coz.errors import CozError, RunEnvironmentError
from coz.run.quiet import mark_wandb_notes_shown

LOGGERS = {"csv": {"csv"}, "wandb": {"wandb"}, "both": {"csv", "wandb"}, "none": set()}


def logger_kinds(logger_cfg) -> set[str]:
    """``{"csv"}``, ``{"wandb"}``, both or neither; an unknown ``logger=`` is one line."""
    name = str(logger_cfg.name) if logger_cfg is not None else "none"
    if name not in LOGGERS:
        raise CozError(f"logger={name}: use one of {', '.join(LOGGERS)}")
    return LOGGERS[name]


# wandb's modes: offline (and its old name dryrun) writes locally, disabled logs nothing, online (and
# its old name run, and shared, several writers to one run) uploads as the run goes
WANDB_MODES = ("offline", "online", "disabled", "dryrun", "run", "shared")
UPLOADING = ("online", "run", "shared")
REACH_TIMEOUT_S = 10.0  # the wait for the W&B server; WANDB_INIT_TIMEOUT (wandb's own setting) overrides


def wandb_mode(logger_cfg) -> str:
    """``WANDB_MODE`` if set, else ``logger.mode`` (offline by default); an unknown ``WANDB_MODE`` is
    one line naming it and the modes wandb knows."""
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        return str(logger_cfg.get("mode") or "offline")
    if mode not in WANDB_MODES:
        raise CozError(
            f"WANDB_MODE={mode}: W&B knows {', '.join(WANDB_MODES)}; set one of them "
            f"or unset WANDB_MODE (logger.mode={logger_cfg.get('mode') or 'offline'} then applies)"
        )
    return mode


def check_wandb(logger_cfg) -> None:
    """Before a run writes anything: with W&B chosen, its mode is one wandb knows, and an uploading
    mode can reach the W&B server (``WANDB_BASE_URL``, else api.wandb.ai) within
    :data:`REACH_TIMEOUT_S` seconds."""
    if logger_cfg is None or "_target_" in logger_cfg or "wandb" not in logger_kinds(logger_cfg):
        return
    if wandb_mode(logger_cfg) in UPLOADING:
        reach_server()


def reach_server() -> None:
    """One TCP connection to the W&B server, or a :class:`RunEnvironmentError` saying what to do."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    try:
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or REACH_TIMEOUT_S)
    except ValueError:
        raise CozError(f"WANDB_INIT_TIMEOUT={os.environ['WANDB_INIT_TIMEOUT']}: must be seconds") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        why = f"no answer in {timeout:g} s" if isinstance(err, TimeoutError) else err.strerror or err
        raise RunEnvironmentError(
            f"W&B online needs the network: cannot reach {host}:{port} ({why}); use WANDB_MODE=offline "
            "and `wandb sync <run>/wandb/offline-run-*` later, or logger=csv"
        ) from None


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
    mark_wandb_notes_shown()  # wandb's run is next
    run_dir = Path(run_dir)
    return {
        "project": str(logger_cfg.get("project") or "coz"),
        "entity": logger_cfg.get("entity"),
        "mode": wandb_mode(logger_cfg),
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
    if args["mode"] in UPLOADING:  # the command line checked it already; the Python API has not
        reach_server()
    return wandb.init(**args, reinit="finish_previous")
