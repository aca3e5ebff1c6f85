"""W&B dashboards of the four tools, read back from their offline run files (no network): keys,
types, group, job type, the x-axis definitions, and the same run id after a resume."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from inprocess_cli import run_cli_here
from PIL import Image
from wandb_records import offline_runs, read_run

from coz.run.cli import quote_null_choices, tool_config_dir

REPO = Path(__file__).resolve().parent.parent


def compose_tool(tool: str, overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        return compose(config_name=tool, overrides=quote_null_choices(overrides))


@pytest.fixture()
def photos(samples, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in samples[:2]:
        Image.open(path).convert("RGB").resize((128, 128)).save(folder / path.name)
    return folder


def test_logger_both_and_bad_names():
    from omegaconf import OmegaConf

    from coz.errors import CozError
    from coz.run.wandb_run import logger_kinds

    assert logger_kinds(compose_tool("zoom", ["logger=both"]).logger) == {"csv", "wandb"}
    assert logger_kinds(compose_tool("zoom", ["logger=none"]).logger) == set()
    with pytest.raises(CozError, match="logger=tensorboard: use one of csv, wandb, both, none"):
        logger_kinds(OmegaConf.create({"name": "tensorboard"}))


def test_zoom_logs_one_gallery_row_per_image_and_a_resume_keeps_the_run(photos, tmp_path, monkeypatch, capfd):
    from coz.zoom import main

    run_dir = tmp_path / "run"
    args = [f"input={photos}", "backbone=bicubic", "zoom.steps=2", "logger=both", f"hydra.run.dir={run_dir}"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = run_cli_here(main, args, tmp_path, monkeypatch, capfd)  # the command line, in this process
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run_dir / "metrics.csv").read_text().count("\n") == 1 + 2 * 2  # csv too: images x steps
    (run_dir / "images" / photos.joinpath(sorted(os.listdir(photos))[0]).stem / "zoom.json").unlink()
    again = run_cli_here(main, args, tmp_path, monkeypatch, capfd)
    assert again.returncode == 0, again.stderr[-2000:]

    files = offline_runs(run_dir)
    assert len(files) == 2
    runs = [read_run(f) for f in files]
    assert runs[0].id == runs[1].id == (run_dir / "wandb_id.txt").read_text().strip()
    for run in runs:
        assert (run.job_type, run.group) == ("zoom", "zoom")
        assert {"backbone:bicubic", "zoom:recursive_multiscale", "prompt:none"} <= set(run.tags)
        assert run.config["backbone"]["name"] == "bicubic"
        (gallery,) = [row for row in run.history if "gallery/_type" in row]
        assert gallery["gallery/_type"] == "table-file"
        assert (gallery["gallery/nrows"], gallery["gallery/ncols"]) == (2, 6)  # every finished image
        assert isinstance(run.summary["sr_s"], float) and run.summary["images"] == 2
    table = next((run_dir / "wandb").rglob("gallery_*.table.json")).read_text()
    assert '"columns":["image","x1","x4","x16","zoom","prompts"]' in table.replace(" ", "")
    assert '"Video"' in table and '"Image"' in table


def test_evaluate_plots_against_scale_and_compares_runs_per_scale(niqe_params, photos, tmp_path):
    from coz.evaluate.tool import run

    overrides = [f"input={photos}", "backbone=bicubic", "dataset=folder", "metrics=offline"]
    overrides += ["zoom.size=256", "zoom.steps=2", "logger=wandb", "method=nn"]
    run(compose_tool("evaluate", overrides), run_dir=tmp_path / "job", results_root=tmp_path)
    (path,) = offline_runs(tmp_path / "job")
    r = read_run(path)
    assert (r.job_type, r.group) == ("evaluate", tmp_path.name)
    assert r.metrics["mean/*"] == "scale"
    curves = [row for row in r.history if "scale" in row]
    assert [row["scale"] for row in curves] == [4, 16]
    assert all(isinstance(row["mean/niqe"], float) for row in curves)
    for scale in (4, 16):
        assert isinstance(r.summary[f"niqe/x{scale}"], float) and isinstance(
            r.summary[f"piqe/x{scale}"], float
        )
    assert r.summary["niqe/x16"] == next(row["mean/niqe"] for row in curves if row["scale"] == 16)
    assert any("sweep/table/_type" in row for row in r.history)  # a single job ends its own sweep
    assert any("sweep/report/_type" in row for row in r.history)
    table = json.loads(next((tmp_path / "job" / "wandb").rglob("sweep/table_*.table.json")).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [(row["scale"], row["images"]) for row in rows] == [(4, 2), (16, 2)]  # numbers, not strings
    assert all(isinstance(row["niqe"], float) for row in rows)


# train_sr's validation and its resume into the same W&B run: test_train_sr_run.py's continued run.


def test_train_grpo_logs_the_critics_answer_and_training_rollouts(tmp_path, samples):
    from coz.train_grpo.tool import run

    photos = tmp_path / "photos"
    photos.mkdir()
    for path in samples:
        shutil.copy(path, photos)
    overrides = ["experiment=smoke", f"input={photos}", "data.write_samples=false", "logger=wandb"]
    overrides += ["critic=keyword", "critic.words=[cat]", "grpo.steps=2", "val.every_n_steps=2"]
    overrides += ["val.at_start=false", "val.rollouts=3", "checkpoint.every_n_steps=2"]
    run(compose_tool("train_grpo", overrides), run_dir=tmp_path / "run")
    (path,) = offline_runs(tmp_path / "run")
    r = read_run(path)
    assert r.job_type == "train_grpo" and r.metrics["*"] == "step"
    (row,) = [row for row in r.history if "train/rollouts/_type" in row]
    assert row["step"] == 2 and row["train/rollouts/nrows"] == 3
    samples_table = next((tmp_path / "run" / "wandb").rglob("val/samples_*.table.json")).read_text()
    assert '"critic_answer"' in samples_table
    with (tmp_path / "run" / "rollouts.csv").open(newline="") as f:
        rollouts = list(csv.DictReader(f))  # completions may hold line breaks: read as CSV
    assert [r["step"] for r in rollouts] == ["2"] * 3 and all("critic_answer" in r for r in rollouts)


@pytest.mark.parametrize(
    ("tool", "override", "message"),
    [
        ("train_sr", "val.every_n_steps=abc", "val.every_n_steps=abc: must be a whole number"),
        ("train_sr", "val.source=/no/such/folder", "data source /no/such/folder: no such folder or file"),
        ("train_grpo", "val.rollouts=-2", "val.rollouts=-2: must be a whole number >= 0"),
    ],
)
def test_bad_validation_options_are_refused_before_loading(tool, override, message):
    from coz.errors import CozError

    check_config = __import__(f"coz.{tool}.tool", fromlist=["check_config"]).check_config
    with pytest.raises(CozError, match=re.escape(message)):
        check_config(compose_tool(tool, ["experiment=smoke", override]))
