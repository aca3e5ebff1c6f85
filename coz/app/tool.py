"""``python -m coz.app``: the command line, ``conf/app/app.yaml`` composed by Hydra, then the server."""

from __future__ import annotations

from omegaconf import DictConfig

from coz.app.schema import App
from coz.app.server import launch
from coz.run.cli import hydra_entry
from coz.run.schema import ConfigError, typed


def _cli(cfg: DictConfig) -> None:
    cfg = typed(App, cfg)  # every key and value, before the server starts
    if cfg.steps > cfg.max_steps:
        raise ConfigError(f"steps={cfg.steps}: must be at most max_steps={cfg.max_steps}")
    if cfg.max_pending_upload_mb < cfg.max_upload_mb:
        raise ConfigError(
            f"max_pending_upload_mb={cfg.max_pending_upload_mb}: must be at least "
            f"max_upload_mb={cfg.max_upload_mb} (else no upload fits)"
        )
    launch(cfg)


main = hydra_entry(_cli, config_name="app", tool_schema=App)
