"""Shared fixtures: sample photos, a composed zoom config, and no network for anyone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from coz.cli import tool_config_dir

REPO = Path(__file__).resolve().parent.parent
# The user's cache as it was before the tests isolate COZ_CACHE: `make install` puts NIQE's
# parameters there.
_USER_CACHE = os.environ.get("COZ_CACHE")

# Nothing may download at test time; loaders that honour these fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> list[Path]:
    """The scikit-image photos as PNG files (real photos, no download)."""
    from coz.samples import write_samples

    return write_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def photo(samples) -> Image.Image:
    return Image.open(samples[0]).convert("RGB")


@pytest.fixture()
def compose_zoom():
    """compose_zoom(overrides) -> the zoom config as ``python -m coz.zoom`` would see it."""

    def _compose(overrides: list[str]):
        from coz.cli import quote_null_choices

        with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
            return compose(config_name="zoom", overrides=quote_null_choices(overrides))

    return _compose


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted weights go to one per-session cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "coz-cache"
    monkeypatch.setenv("COZ_CACHE", str(cache))


@pytest.fixture()
def niqe_params(monkeypatch) -> Path:
    """NIQE's pristine parameters as `make install` wrote them (python -m coz.evaluation.niqe_params)."""
    base = (
        Path(_USER_CACHE)
        if _USER_CACHE
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coz"
    )
    path = Path(os.environ.get("COZ_NIQE_PARAMS") or base / "pyiqa" / "niqe_modelparameters.mat")
    assert path.is_file(), f"{path} is missing: run `make install` (python -m coz.evaluation.niqe_params)"
    monkeypatch.setenv("COZ_NIQE_PARAMS", str(path))
    return path


@pytest.fixture()
def no_network(monkeypatch) -> list:
    """Every attempt to open a network connection, refused and recorded: a loader that should fail
    at once offline must leave this list empty (a check that does not depend on the machine's speed)."""
    import socket

    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"no network in tests (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
