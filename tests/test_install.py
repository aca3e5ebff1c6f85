"""A built wheel works outside the checkout: the configs ship inside the package (coz/conf)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # builds and installs a wheel (about 20 s)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--no-deps", "--no-index"], check=True)


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed into): built from a copy of the checkout's sources,
    so the build writes nothing into the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("coz", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(source))
    (wheel,) = (tmp / "dist").glob("coz-*.whl")
    pip("install", "--target", str(tmp / "site"), str(wheel))
    return wheel, tmp / "site"


def test_the_wheel_ships_every_config(wheel_install):
    wheel, _ = wheel_install
    shipped = {
        n.removeprefix("coz/conf/") for n in zipfile.ZipFile(wheel).namelist() if n.startswith("coz/conf/")
    }
    expected = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped
    assert not any(n.startswith("conf/") for n in zipfile.ZipFile(wheel).namelist())


def test_the_installed_package_zooms_from_another_folder(wheel_install, tmp_path):
    _, site = wheel_install
    Image.new("RGB", (48, 40), (200, 120, 40)).save(tmp_path / "tiny.png")
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    where = subprocess.run(
        [sys.executable, "-c", "import coz, coz.run.cli; print(coz.__file__); print(coz.run.cli.CONFIG_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    args = ["input=tiny.png", "backbone=bicubic", "zoom=bicubic", "zoom.steps=1", "logger=none"]
    args += ["save.gif=false", "hydra.run.dir=run"]
    result = subprocess.run(
        [site / "bin" / "coz-zoom", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "images" / "tiny" / "state_1.png").is_file()


def test_console_scripts_and_their_shell_completion(wheel_install):
    _, site = wheel_install
    for tool in ("zoom", "evaluate", "train-sr", "train-grpo"):
        assert (site / "bin" / f"coz-{tool}").is_file()
    env = {**os.environ, "PYTHONPATH": str(site), "COMP_LINE": "coz-train-sr experiment=sm"}
    result = subprocess.run(
        [site / "bin" / "coz-train-sr", "-sc", "query=bash"], env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["experiment=smoke"], result.stdout + result.stderr
    env["COMP_LINE"] = "coz-train-sr backbone=tiny_sd"  # a shared group (conf/shared/), through coz://
    result = subprocess.run(
        [site / "bin" / "coz-train-sr", "-sc", "query=bash"], env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["backbone=tiny_sd21", "backbone=tiny_sd3"], result.stdout + result.stderr
