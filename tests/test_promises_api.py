"""The Python API's promise "seeds are reset from seed= at every call": after each call the global
generators stand where a fresh seed puts them, whatever ran between calls."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

import coz


def fresh_draws(seed: int) -> tuple[list[float], list[float], float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return draws()


def draws() -> tuple[list[float], list[float], float]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def test_every_zoom_call_reseeds_from_seed():
    # bicubic draws no random numbers, so each call must leave the generators exactly as freshly seeded
    zoomer = coz.Zoomer(backbone="bicubic", prompt="none", steps=1, seed=7, **{"zoom.size": 64})
    image = Image.new("RGB", (64, 64), "tan")
    expected = fresh_draws(7)
    for junk_seed in (123, 456):  # whatever the caller did with the generators in between
        fresh_draws(junk_seed)
        zoomer.zoom(image)
        assert draws() == expected


def test_a_run_after_a_command_in_the_same_process_records_its_own_config(
    samples, compose_zoom, tmp_path, monkeypatch, capsys
):
    """``python -m coz.zoom --cfg job``'s main (Hydra leaves that command's config set process-wide),
    then ``run(cfg, run_dir)`` in the same process (a notebook, the API): the run records no Hydra
    job of its own, and never the command's overrides or group choices."""
    from inprocess_cli import run_cli

    from coz.zoom.tool import main, run

    assert run_cli(main, ["--cfg", "job", "backbone=nearest", "input=x"], monkeypatch) == 0
    assert "name: nearest" in capsys.readouterr().out
    cfg = compose_zoom([f"input={samples[0]}", "backbone=bicubic", "zoom.steps=1", "zoom.size=64"])
    run(cfg, run_dir=tmp_path / "api")
    assert not (tmp_path / "api" / ".hydra").exists()
    assert "nearest" not in (tmp_path / "api" / "run.json").read_text()
