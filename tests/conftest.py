"""Shared fixtures: sample photos, a composed zoom config, and no network for anyone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra_read_once import read_once
from PIL import Image

from coz.run.cli import tool_config_dir

REPO = Path(__file__).resolve().parent.parent
# The user's cache as it was before the tests isolate COZ_CACHE: `make install` puts NIQE's
# parameters there.
_USER_CACHE = os.environ.get("COZ_CACHE")

# Nothing may download at test time; loaders that honour these fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session", autouse=True)
def _hydra_parses_each_config_file_once():
    """Every in-process compose reads the same YAML files: parse each once (tests/hydra_read_once.py)."""
    with read_once():
        yield


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
        from coz.run.cli import quote_null_choices

        with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
            return compose(config_name="zoom", overrides=quote_null_choices(overrides))

    return _compose


def _session_cache(tmp_path_factory) -> Path:
    """One cache per test session, never the user's. Under pytest-xdist (``make test`` runs two
    workers) the workers share it: weights are converted once, and coz's CPU share (``cpu-share/``
    in the cache) counts every worker's processes, so two workers do not both claim every core."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "coz-cache"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COZ_CACHE", str(_session_cache(tmp_path_factory)))


@pytest.fixture(scope="session", autouse=True)
def _cpu_share_between_workers(tmp_path_factory):
    """Under pytest-xdist: register this worker with coz's CPU share and start with its share of the
    cores (torch's default, every core in every process, oversubscribes them and slows both)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield None
        return
    import torch

    from coz.run.cpu_share import available_cores

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, available_cores() // workers))
    folder = _session_cache(tmp_path_factory) / "cpu-share"
    folder.mkdir(parents=True, exist_ok=True)
    token = folder / str(os.getpid())
    token.touch()
    yield token
    token.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _worker_stays_registered(_cpu_share_between_workers):
    # a coz run inside this worker registers the same pid and removes the token when it closes
    if _cpu_share_between_workers is not None:
        _cpu_share_between_workers.touch()


def _niqe_params_path() -> Path:
    base = (
        Path(_USER_CACHE)
        if _USER_CACHE
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coz"
    )
    path = Path(os.environ.get("COZ_NIQE_PARAMS") or base / "pyiqa" / "niqe_modelparameters.mat")
    assert path.is_file(), f"{path} is missing: run `make install` (python -m coz.evaluate.niqe_params)"
    return path


@pytest.fixture()
def niqe_params(monkeypatch) -> Path:
    """NIQE's pristine parameters as `make install` wrote them (python -m coz.evaluate.niqe_params)."""
    path = _niqe_params_path()
    monkeypatch.setenv("COZ_NIQE_PARAMS", str(path))
    return path


@pytest.fixture(scope="module")
def shared_run_env(tmp_path_factory):
    """For a module-scoped fixture that runs a tool once for several tests (a shared run): the
    environment a test gets from the function-scoped fixtures, which are set up after it (the
    session's cache, NIQE's parameters), for as long as the module's tests last."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COZ_CACHE", str(_session_cache(tmp_path_factory)))
        patch.setenv("COZ_NIQE_PARAMS", str(_niqe_params_path()))
        yield patch


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


# Under pytest-xdist (``--dist loadfile``) each file goes to one worker, in collection order: the
# longest files go first, so that the short ones fill the end instead of one long file running alone.
# (Ranked 2026-12-07: each file's summed test durations in a quiet make test at a06b32c. A ranking
# from a later run, 885e223, made make test slower: the order also decides which worker imports what;
# experiments/test-suite.md.)
LONGEST_FILES_FIRST = (
    "test_grpo_train.py",
    "test_train_sr_run.py",
    "test_evaluation_run.py",
    "test_app.py",
    "test_typed_configs.py",
    "test_run_contract.py",
    "test_backbone_sd21.py",
    "test_training_nonfinite.py",
    "test_zoom_cli.py",
    "test_backbone_s3diff.py",
    "test_run_folders.py",
    "test_install.py",
    "test_realesrgan.py",
    "test_study.py",
    "test_dashboards.py",
    "test_full_image.py",
    "test_promises_training.py",
    "test_app_uploads.py",
    "test_extras.py",
    "test_backbone_sd3.py",
)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
