"""The one run skeleton (coz.run.handle) from the user's side: every tool writes the same run.json
keys, ``threads=auto`` means the same in every tool, and a run refused by its checks leaves no
folder behind (issue 27: another tool was then refused there)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from inprocess_cli import run_cli
from PIL import Image

from coz.run.cli import quote_null_choices, tool_config_dir

# what README "Runs, resume and exit codes" promises in every run.json
COMMON_KEYS = {"tool", "config", "choices", "seed", "device", "threads", "versions", "machine", "attempts"}

# each tool's first heavy step, where the test stops it (the run's preamble is all done by then)
HEAVY = {  # the module attribute each tool's body calls first ("tool": its coz.<tool>.tool module)
    "zoom": ("coz.zoom.build", "build_chain"),
    "evaluate": ("tool", "_predict"),
    "train_sr": ("tool", "build"),
    "train_grpo": ("tool", "_fit"),
}


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def overrides(tool: str, photos: Path) -> list[str]:
    return {
        "zoom": [f"input={photos}", "backbone=bicubic", "zoom.steps=1"],
        "evaluate": ["experiment=smoke", "method=nn", f"input={photos}", "zoom.steps=1"],
        "train_sr": ["experiment=smoke", f"data.sources=[{{path: {photos}, prob: 1}}]"],
        "train_grpo": ["experiment=smoke", f"input={photos}"],
    }[tool]


def compose_tool(tool: str, args: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        return compose(config_name=tool, overrides=quote_null_choices(args))


def run_until_heavy(tool: str, args: list[str], run_dir: Path, monkeypatch) -> int:
    """Run ``tool`` into ``run_dir`` until its first heavy step; torch's thread count there."""
    module = importlib.import_module(f"coz.{tool}.tool")
    seen = {}

    def stop(*args, **kwargs):
        seen["threads"] = torch.get_num_threads()
        raise Stop

    where, name = HEAVY[tool]
    monkeypatch.setattr(module if where == "tool" else importlib.import_module(where), name, stop)
    with pytest.raises(Stop):
        module.run(compose_tool(tool, args), run_dir)
    return seen["threads"]


@pytest.mark.parametrize("tool", list(HEAVY))
def test_every_tool_writes_the_same_run_json_keys(tool, photos, tmp_path, monkeypatch):
    threads = run_until_heavy(tool, overrides(tool, photos), tmp_path / "run", monkeypatch)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert COMMON_KEYS <= set(record), COMMON_KEYS - set(record)
    assert record["tool"] == tool and record["threads"] == threads and record["device"] == "cpu"
    assert record["seed"] == record["config"]["seed"]
    (attempt,) = record["attempts"]  # the first start into the folder
    assert attempt["resumed_from"] is None and attempt["threads"] == threads


@pytest.mark.parametrize("tool", ["zoom", "train_sr"])
def test_threads_auto_takes_the_same_share_of_the_cores_in_every_tool(tool, photos, tmp_path, monkeypatch):
    # another live coz process registered in the CPU share: this run takes half the cores
    monkeypatch.setenv("COZ_CACHE", str(tmp_path / "cache"))
    share = tmp_path / "cache" / "cpu-share"
    share.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (share / str(other.pid)).touch()
    cores = len(__import__("os").sched_getaffinity(0))
    before = torch.get_num_threads()
    torch.set_num_threads(cores + 1)  # neither the default nor the share: a tool must set it
    try:
        threads = run_until_heavy(
            tool, [*overrides(tool, photos), "threads=auto"], tmp_path / "r", monkeypatch
        )
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(before)
    assert threads == max(1, cores // 2)


@pytest.mark.parametrize("inputs", ["no data", "no models"])
def test_a_run_refused_by_its_checks_leaves_no_folder_behind(inputs, photos, tmp_path, monkeypatch):
    """Issue 27: ``coz.train_grpo critic=internvl`` without data or models was refused after claiming
    its new folder: .coz-tool stayed, and every other tool was then refused in that folder."""
    from coz.train_grpo.tool import main

    monkeypatch.setenv("COZ_DATA", str(tmp_path / "data"))  # data.root: no LSDIR there
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # no model cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = tmp_path / "run"
    args = ["critic=internvl", f"hydra.run.dir={run_dir}"]
    if inputs == "no models":
        args.append(f"input={photos}")
    assert run_cli(main, args, monkeypatch) == 2
    assert not (run_dir / ".coz-tool").exists()
    assert not run_dir.exists()  # Hydra's empty log went with it


def test_a_folder_of_the_earlier_run_json_shape_still_resumes(photos, tmp_path, compose_zoom):
    from coz.errors import CozError
    from coz.zoom.tool import run

    args = [f"input={photos}", "backbone=bicubic", "zoom.steps=1", "save.gif=false", "save.strip=false"]
    run(compose_zoom(args), tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())
    old = {k: v for k, v in record.items() if k not in ("tool", "attempts")}  # as the code before wrote it
    (tmp_path / "run.json").write_text(json.dumps(old))
    with pytest.raises(CozError, match="zoom.steps: 1 before, 2 now"):
        run(compose_zoom([*args[:2], "zoom.steps=2", *args[3:]]), tmp_path)
    again = run(compose_zoom(args), tmp_path)
    assert [a["started"] is None for a in again["attempts"]] == [True, False]  # the earlier one, undated
    assert sorted(again["finished"]) == sorted(record["finished"])


@pytest.mark.parametrize("tool", ["train_sr", "train_grpo"])
def test_a_resume_path_that_is_no_checkpoint_leaves_no_folder(tool, photos, tmp_path):
    from coz.errors import CozError

    module = importlib.import_module(f"coz.{tool}.tool")
    cfg = compose_tool(tool, [*overrides(tool, photos), f"resume={tmp_path / 'none.safetensors'}"])
    with pytest.raises(CozError, match="resume="):
        module.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
