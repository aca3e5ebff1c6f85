"""The run contract every tool shares (coz.run; README "Runs, resume and exit codes"): one process
per run folder, per-image results as one unit, exact resumes, one-line errors and exit codes."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coz.errors import CozError
from coz.zoom import run

REPO = Path(__file__).resolve().parent.parent
# no model: the run machinery in a second; 64-px states, two steps
TINY = ["zoom=bicubic", "zoom.steps=2", "zoom.size=64", "save.gif_size=16"]


def coz(tool: str, args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"coz.{tool}", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def start(tool: str, args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"coz.{tool}", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory) -> Path:
    """Eight small noise images (each zooms in milliseconds)."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def rows(run_dir: Path) -> list[list[str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.reader(f))


def result_files(run_dir: Path) -> dict[str, bytes]:
    """Everything a zoom run produces for its images (not logs or attempt records)."""
    found = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and rel.split("/")[0] in ("images", "scales"):
            found[rel] = path.read_bytes()
    return found


# ---------------------------------------------------------------------------- 1: one process per folder


def test_a_folder_held_by_a_live_process_is_refused_and_freed_when_it_dies(compose_zoom, tiny_photos, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from coz.run import lock; "
            "lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = compose_zoom([*TINY, f"input={tiny_photos}"])
        with pytest.raises(CozError, match=f"in use by another coz run \\(pid {holder.pid}\\)"):
            run(cfg, run_dir=tmp_path)
        assert not (tmp_path / "images").exists() and not (tmp_path / "run.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from coz.run import lock

    record = run(cfg, run_dir=tmp_path)  # the kernel dropped the dead process's lock
    assert len(record["finished"]) == 8
    assert not lock.held(tmp_path)  # and this process let go of it at the end


@pytest.mark.parametrize("same_config", [True, False])
def test_two_runs_started_together_never_mix_in_one_folder(tiny_photos, tmp_path, same_config):
    out = tmp_path / "run"
    common = [*TINY, f"input={tiny_photos}", "batch_size=1", f"hydra.run.dir={out}"]
    second = common if same_config else [*common, "zoom.steps=1"]
    procs = [start("zoom", common, tmp_path), start("zoom", second, tmp_path)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    if same_config:  # the second either waits its turn (refused) or resumes a finished run
        assert codes in ([0, 0], [0, 2]), results
    else:
        assert codes == [0, 2], results
    refused = [err for code, err in results if code == 2]
    for err in refused:
        assert "in use by another coz run" in err or "zoom.steps: 2 before, 1 now" in err, err
    steps = json.loads((out / "run.json").read_text())["config"]["zoom"]["steps"]  # the winner's
    table = rows(out)
    assert len(table) == 1 + 8 * steps  # every image's rows exactly once, from one config
    assert {r[1] for r in table[1:]} == {str(i) for i in range(1, steps + 1)}
