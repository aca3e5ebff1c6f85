"""Both trainers seed python, numpy, torch and the loader workers with Lightning's
``seed_everything(cfg.seed, workers=True)`` before the Lightning trainer is built, and refuse a seed
numpy cannot take in one line."""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.errors import CozError
from coz.run.cli import quote_null_choices, tool_config_dir


class Stop(Exception):
    """Raised where the trainer would be built: what ran before is what the test checks."""


def compose_tool(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir(name), version_base="1.3"):
        return compose(config_name=name, overrides=quote_null_choices(overrides))


def seeded_before_the_trainer(monkeypatch, module, target: str) -> dict[str, object]:
    """Run until ``module.target`` (the trainer's construction), return what was seeded by then."""
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    seen = {}

    def stop(*args, **kwargs):
        seen.update(
            seed=os.environ.get("PL_GLOBAL_SEED"),
            workers=os.environ.get("PL_SEED_WORKERS"),
            torch=torch.initial_seed(),
        )
        raise Stop

    monkeypatch.setattr(module, target, stop)
    return seen


def test_train_sr_seeds_everything_with_workers(tmp_path, monkeypatch):
    import coz.train_sr.tool as tool

    seen = seeded_before_the_trainer(monkeypatch, tool, "build")
    cfg = compose_tool("train_sr", ["experiment=smoke", "logger=csv", "seed=1234", "trainer.accelerator=cpu"])
    with pytest.raises(Stop):
        tool.run(cfg, tmp_path / "run")
    assert seen == {"seed": "1234", "workers": "1", "torch": 1234}


def test_train_grpo_seeds_everything_with_workers(tmp_path, monkeypatch, samples):
    import coz.train_grpo.tool as tool

    seen = seeded_before_the_trainer(monkeypatch, tool, "_fit")
    photos = samples[0].parent
    cfg = compose_tool(
        "train_grpo",
        ["experiment=smoke", f"input={photos}", "data.write_samples=false", "logger=csv", "seed=4321"],
    )
    with pytest.raises(Stop):
        tool.run(cfg, tmp_path / "run")
    assert seen == {"seed": "4321", "workers": "1", "torch": 4321}


@pytest.mark.parametrize("name", ["train_sr", "train_grpo"])
def test_a_seed_numpy_cannot_take_is_one_line(name):
    from importlib import import_module

    cfg = compose_tool(name, ["experiment=smoke", f"seed={2**32}"])
    with pytest.raises(CozError, match="seed=4294967296") as err:
        import_module(f"coz.{name}.tool").check_config(cfg)
    assert "\n" not in str(err.value)
