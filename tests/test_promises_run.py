"""Run-contract promises checked against the README's words: the seed may never change on resume,
a sweep exits with its highest code (not its last), and the zoom bar counts a failed image's steps."""

from __future__ import annotations

import importlib

import pytest
from PIL import Image

from coz.run import progress, sweep
from coz.run.entry import Jobs, report
from coz.run.resume import differences


@pytest.mark.parametrize("tool", ["zoom", "evaluate", "train_sr", "train_grpo"])
def test_a_resume_refuses_another_seed_in_every_tool(tool):
    earlier = {"seed": 1, "batch_size": 2}
    now = {"seed": 2, "batch_size": 4}  # batch_size may change: it changes no result
    declaration = importlib.import_module(f"coz.{tool}.tool").TOOL
    assert differences(earlier, now, declaration.resume_keys()) == [("seed", 1, 2)]


def test_a_sweep_exits_with_its_highest_code_not_its_last(monkeypatch, capsys):
    # README: "lists the failed jobs (folder, code, message) and exits with the highest code"
    outcomes = [("a", 0, ""), ("b", 3, "disk full"), ("c", 2, "bad option"), ("d", 1, "skipped")]
    monkeypatch.setattr(sweep, "finished", outcomes)
    assert report(Jobs("zoom")) == 3
    err = capsys.readouterr().err
    assert "2 of 4 jobs failed" in err and "b (exit 3): disk full" in err and "c (exit 2): bad option" in err
    # a job that finished with some inputs skipped (exit 1) is not called failed
    assert "1 of 4 jobs finished but skipped some inputs (listed above):\n  d (exit 1): skipped" in err


def test_the_zoom_bar_counts_the_steps_of_an_image_that_failed(compose_zoom, tmp_path, monkeypatch):
    from coz.zoom.tool import run

    monkeypatch.delenv("COZ_PROGRESS", raising=False)
    progress.finished.clear()
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (64, 64), "tan").save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"not a png")
    overrides = [f"input={folder}", "backbone=bicubic", "zoom.steps=2", "save.gif=false", "save.strip=false"]
    run(compose_zoom(overrides), tmp_path / "run")
    bars = [c for c in progress.finished if c.desc == "zoom"]
    # two images of two steps each: the broken one's steps are counted as it is skipped, so 4 of 4
    assert bars == [progress.Counted("zoom", "image-steps", 4, 4, 0)]
