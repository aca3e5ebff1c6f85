"""``python -m coz.app``: the command line, ``conf/app/app.yaml`` composed by Hydra, then the server."""

from __future__ import annotations

from omegaconf import DictConfig

from coz.app.server import launch
from coz.run.cli import hydra_entry


def _cli(cfg: DictConfig) -> None:
    launch(cfg)


main = hydra_entry(_cli, config_name="app")
