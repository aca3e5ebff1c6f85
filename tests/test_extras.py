"""The lean install: without the extras' packages the CPU zoom path still works, and a tool that needs a
missing extra says which in one line (exit 3), not an ImportError traceback (coz/run/extras.py)."""

from __future__ import annotations

import subprocess
import sys

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
WITHOUT_EXTRAS = f"""
import importlib.abc, runpy, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
tool = sys.argv[1]
sys.argv = [tool, *sys.argv[2:]]
runpy.run_module(tool, run_name="__main__")
"""


def without_extras(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *args], capture_output=True, text=True, timeout=300
    )


def test_the_cpu_zoom_path_needs_no_extra(samples, tmp_path):
    result = without_extras(
        "coz.zoom",
        f"input={samples[0]}",
        "backbone=span",
        "backbone.runtime=torch",
        "zoom.steps=1",
        "zoom.size=64",
        "save.gif=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "images" / samples[0].stem / "zoom.json").is_file()


@pytest.mark.parametrize(
    ("tool", "args", "extra"),
    [
        ("coz.train_sr", ["experiment=smoke"], "[train]"),
        ("coz.train_grpo", ["experiment=smoke"], "[train]"),
        ("coz.zoom", ["backbone=tiny_sd3"], "[models]"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(tool, args, extra, samples, tmp_path):
    image = [f"input={samples[0]}", "zoom.size=64"] if tool == "coz.zoom" else []
    result = without_extras(tool, *args, *image, f"hydra.run.dir={tmp_path / 'run'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert len(lines) == 1 and "is not installed" in lines[0] and extra in lines[0], result.stderr
