"""A built wheel works outside the checkout, installed into a fresh virtual environment: the configs
ship inside the package (coz/conf), and so do the paper's numbers (coz/evaluate/paper)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
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
    """(the wheel, the fresh venv it is installed into): built from a copy of the checkout's sources,
    so the build writes nothing into the checkout. The venv sees this one's packages (torch and the
    rest, never downloaded again) through a .pth line, which adds their folder but runs none of its
    own .pth files: the checkout's editable install stays invisible, coz comes from the wheel alone."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("coz", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(source))
    (wheel,) = (tmp / "dist").glob("chain_of_zoom-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "the_test_stack.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip("--python", str(venv / "bin" / "python"), "install", str(wheel))
    return wheel, venv


def outside(venv: Path, args: list, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A command of the venv, run from ``cwd`` with none of the checkout on the path."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean.update(PYTHONWARNINGS="ignore", PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **env)
    return subprocess.run(args, cwd=cwd, env=clean, capture_output=True, text=True, timeout=600)


def test_the_wheel_ships_every_config(wheel_install):
    wheel, _ = wheel_install
    shipped = {
        n.removeprefix("coz/conf/") for n in zipfile.ZipFile(wheel).namelist() if n.startswith("coz/conf/")
    }
    expected = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped
    assert not any(n.startswith("conf/") for n in zipfile.ZipFile(wheel).namelist())


def test_the_installed_package_zooms_from_another_folder(wheel_install, tmp_path):
    _, venv = wheel_install
    Image.new("RGB", (48, 40), (200, 120, 40)).save(tmp_path / "tiny.png")
    where = outside(
        venv,
        ["python", "-c", "import coz, coz.run.cli; print(coz.__file__); print(coz.run.cli.CONFIG_DIR)"],
        tmp_path,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(p).is_relative_to(venv) for p in where.stdout.split()), where.stdout
    args = ["input=tiny.png", "backbone=bicubic", "zoom=bicubic", "zoom.steps=1", "logger=none"]
    args += ["save.gif=false", "hydra.run.dir=run"]
    result = outside(venv, ["coz-zoom", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "images" / "tiny" / "state_1.png").is_file()


def test_an_evaluation_from_the_wheel_reports_the_papers_numbers(wheel_install, tmp_path):
    """The paper's numbers are package data: they used to vanish silently from every table when
    coz was installed from a wheel (read from experiments/ beside the package). The installed
    package builds the report every coz-evaluate job ends with, over a job's scored row (scoring
    it there would add a Lightning import, ~11 CPU-s, to a check of package data)."""
    from coz.evaluate.rows import BASE_FIELDS, RowWriter

    _, venv = wheel_install
    job = {"table": "table1", "dataset": "photos", "method": "NN Interpolation"}
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "job.json").write_text(json.dumps({"job": job, "config": {"method": "nn"}}))
    row = {**job, "image": "astronaut", "scale": 4, "failed": 0, "niqe": 5.25}
    RowWriter(tmp_path / "ev" / "rows" / "0-0.csv", [*BASE_FIELDS, "niqe"]).append([row])
    cfg = {"table": "table1", "paper_dataset": "DIV2K", "not_implemented": []}
    cfg["report"] = {"plots": False, "html": False}
    code = "import sys; from omegaconf import OmegaConf; from coz.evaluate import report; print(report.__file__); "
    code += f"report.build_report(sys.argv[1], OmegaConf.create({cfg!r}))"
    result = outside(venv, ["python", "-c", code, "ev"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.split()[0]).is_relative_to(venv), result.stdout
    with (tmp_path / "ev" / "table.csv").open(newline="") as f:
        (ours,) = list(csv.DictReader(f))
    assert (ours["dataset"], ours["scale"], ours["method"], ours["images"]) == (
        "photos",
        "4",
        "NN Interpolation",
        "1",
    )
    # beside ours, the paper's Table 1: NN interpolation on DIV2K at 4x has NIQE 12.1252
    assert float(ours["niqe_paper"]) == pytest.approx(12.1252)
    assert float(ours["niqe"]) == 5.25


def test_console_scripts_and_their_shell_completion(wheel_install, tmp_path):
    _, venv = wheel_install
    for tool in ("zoom", "evaluate", "train-sr", "train-grpo", "app", "study", "fetch"):
        assert (venv / "bin" / f"coz-{tool}").is_file()
    releases = outside(venv, ["coz-fetch"], tmp_path)
    assert releases.returncode == 0 and "  coz-sd3 " in releases.stdout, releases.stderr
    # a shared group (conf/shared/), through coz://, which the tool's own config in the wheel names
    # (completing it composes that config: a group of the tool's own adds nothing but ~4 CPU-s)
    line = "coz-train-sr backbone=tiny_sd"
    result = outside(venv, ["coz-train-sr", "-sc", "query=bash"], tmp_path, COMP_LINE=line)
    assert result.stdout.split() == ["backbone=tiny_sd21", "backbone=tiny_sd3"], result.stdout + result.stderr
