"""The lean install: without the extras' packages the CPU zoom path still works, and a tool that needs a
missing extra says which in one line (exit 3), not an ImportError traceback (coz/run/extras.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# What `pip install coz` (no extra) does not bring.
EXTRAS_ONLY = (
    "lightning",
    "torchmetrics",
    "diffusers",
    "transformers",
    "peft",
    "pyiqa",
    "matplotlib",
    "scipy",
    "wandb",
    "gradio",
    "gradio_client",
    "sqlalchemy",
    "submitit",
    "hydra_plugins",
    "timm",
    "trl",
)
# One interpreter, the extras' packages blocked, runs each tool command of RUNS in turn (its stderr to its
# own file, fd 2 itself redirected) and writes each exit code to a report: one lean interpreter for the
# four runs instead of four (~3 CPU-s each). A blocked package stays blocked for every run, so no run can
# lean on an extra an earlier one imported; the warnings' "shown once" registries are reset between runs,
# so a refusal's stderr holds all it would hold in an interpreter of its own.
# argv: the report file, then the RUNS as JSON: [[name, tool, *args], ...].
WITHOUT_EXTRAS = f"""
import importlib.abc, json, os, runpy, sys, warnings
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
report, runs = sys.argv[1], json.loads(sys.argv[2])
filters, stderr, codes = list(warnings.filters), os.dup(2), {{}}
for name, tool, *args in runs:
    warnings.filters[:] = filters
    warnings._filters_mutated()  # every warning shows again, as in a fresh interpreter
    sys.stderr.flush()
    with open(f"{{report}}.{{name}}.stderr", "w") as f:
        os.dup2(f.fileno(), 2)
    sys.argv = [tool, *args]
    try:
        runpy.run_module(tool, run_name="__main__")
        codes[name] = 0
    except SystemExit as exit:
        codes[name] = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)
with open(report, "w") as f:
    json.dump(codes, f)
"""
MISSING = [
    ("coz.train_sr", ["experiment=smoke"], "[train]"),
    ("coz.train_grpo", ["experiment=smoke"], "[train]"),
    ("coz.zoom", ["backbone=tiny_sd3"], "[models]"),
]


@pytest.fixture(scope="module")
def lean(samples, tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Each run of the lean interpreter by name: (exit code, stderr, run folder)."""
    tmp = tmp_path_factory.mktemp("lean")
    zoom = ["input=" + str(samples[0]), "backbone=span", "backbone.runtime=torch", "zoom.steps=1"]
    runs = [["cpu_zoom", "coz.zoom", *zoom, "zoom.size=64", "save.gif=false"]]
    for tool, args, _ in MISSING:
        image = [f"input={samples[0]}", "zoom.size=64"] if tool == "coz.zoom" else []
        runs.append([tool, tool, *args, *image])
    for run in runs:
        run.append(f"hydra.run.dir={tmp / run[0]}")
    report = tmp / "codes.json"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, str(report), json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and report.is_file(), result.stderr
    codes = json.loads(report.read_text())
    return {name: (codes[name], Path(f"{report}.{name}.stderr").read_text(), tmp / name) for name, *_ in runs}


def test_the_cpu_zoom_path_needs_no_extra(samples, lean):
    code, stderr, run_dir = lean["cpu_zoom"]
    assert code == 0, stderr
    assert (run_dir / "images" / samples[0].stem / "zoom.json").is_file()


@pytest.mark.parametrize(("tool", "args", "extra"), MISSING)
def test_a_missing_extra_is_one_line_naming_it(tool, args, extra, lean):
    code, stderr, _ = lean[tool]
    lines = stderr.strip().splitlines()
    assert code == 3, stderr
    assert len(lines) == 1 and "is not installed" in lines[0] and extra in lines[0], stderr
