"""``python -m coz.app``: the command line, ``conf/app/app.yaml`` composed by Hydra, then the server."""

from __future__ import annotations

import logging
import os
import socket
import sys

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
    check_port(cfg.host, cfg.port)
    try:
        launch(cfg)  # until Ctrl-C (Gradio closes the server) or a TERM signal (SystemExit)
    except SystemExit as stop:
        end_process(stop.code or 0)
    end_process(0)


def end_process(code: int) -> None:
    """The page has stopped and its folder is gone; a job may still be computing in a thread of its
    own. Python's own exit would wait for that thread (seconds) or, with the SR libraries' native
    threads still at work, abort in their C++ destructors ("terminate called without an active
    exception", exit 134): so the process ends here, its output flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_port(host: str, port: int) -> None:
    """One line now if the page could not listen at ``host:port`` (Gradio's own refusal is two lines
    and speaks of its internals); port 0 takes a free one."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or "127.0.0.1", port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket
            probe.bind(address)
    except OSError as err:
        raise ConfigError(
            f"host={host} port={port}: cannot listen there ({err.strerror or err}); choose another port= or host="
        ) from None


main = hydra_entry(_cli, config_name="app", tool_schema=App)
