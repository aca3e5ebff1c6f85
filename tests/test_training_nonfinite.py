"""Training to NaN stops at once, and a checkpoint is resumed only by the trainer (and backbone) that
wrote it (issue 27), from the user's side: the tools' command lines on the tiny offline models.

NaN is forced as a user would: ``optim.lr=1e9``. AdamW's first step moves every trained weight by
about lr (its update is lr * m / sqrt(v), |m / sqrt(v)| ~ 1 at step 1), so the weights after step 1
are finite (~1e9) and step 2's forward overflows: step 1's checkpoint is the last finite one.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from inprocess_cli import run_cli

SR = [
    "experiment=smoke",
    "logger=csv",
    "data.crop=32",
    "data.batch_size=1",
    "log.images_every=0",
    "val.every_n_steps=0",
    "trainer.accelerator=cpu",
    "stages=[{name: a, degradation: bicubic, steps: 2}]",
    "checkpoint.every_n_steps=1",
]


def grpo_args(photos: Path) -> list[str]:
    return [
        "experiment=smoke",
        f"input={photos}",
        "data.write_samples=false",
        "logger=csv",
        "critic=keyword",  # rewards that differ within a group: a gradient (the smoke critic's are equal)
        "critic.words=[Illuminate]",
        "grpo.top_k=10",
        "grpo.generations=4",
        "grpo.steps=2",
        "checkpoint.every_n_steps=1",
        "val.every_n_steps=0",
        "val.at_start=false",
    ]


def train_sr(args: list[str], monkeypatch) -> int:
    from coz.train_sr.tool import main

    return run_cli(main, args, monkeypatch)


def train_grpo(args: list[str], monkeypatch) -> int:
    from coz.train_grpo.tool import main

    return run_cli(main, args, monkeypatch)


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-2000:]
    return lines[-1] if lines else ""


def finite(path: Path) -> bool:
    from coz.run.checkpoint_files import load_checkpoint_file

    state = load_checkpoint_file(path)["state_dict"]
    return bool(state) and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.fixture(scope="module")
def sr_nan(tmp_path_factory):
    """train_sr at optim.lr=1e9, 2 steps, a checkpoint every step: (exit status, stderr's last line, run)."""
    run_dir = tmp_path_factory.mktemp("sr_nan") / "run"
    with pytest.MonkeyPatch.context() as mp:
        import sys
        from io import StringIO

        err = StringIO()
        mp.setattr(sys, "stderr", err)
        status = train_sr([*SR, "optim.lr=1e9", f"hydra.run.dir={run_dir}"], mp)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return status, lines[-1] if lines else "", run_dir, err.getvalue()


@pytest.fixture(scope="module")
def grpo_nan(tmp_path_factory):
    from coz.samples import write_samples

    photos = tmp_path_factory.mktemp("photos")
    write_samples(photos)
    run_dir = tmp_path_factory.mktemp("grpo_nan") / "run"
    with pytest.MonkeyPatch.context() as mp:
        import sys
        from io import StringIO

        err = StringIO()
        mp.setattr(sys, "stderr", err)
        status = train_grpo([*grpo_args(photos), "optim.lr=1e9", f"hydra.run.dir={run_dir}"], mp)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return status, lines[-1] if lines else "", run_dir, err.getvalue(), photos


def test_train_sr_stops_at_the_first_nan_loss_and_keeps_the_last_finite_checkpoint(sr_nan):
    status, line, run_dir, err = sr_nan
    assert status == 3, err[-2000:]
    assert "Traceback" not in err
    assert "step 2" in line and "loss term" in line, line
    written = sorted((run_dir / "checkpoints").glob("step_*.safetensors"))
    assert [p.name for p in written] == ["step_0000001.safetensors"]  # kept, and nothing after it
    assert all(finite(p) for p in (run_dir / "checkpoints").glob("*.safetensors"))
    from coz.run.checkpoint_files import checkpoint_step

    named = Path(line.split("the last finite checkpoint is ")[1].split()[0])  # where to resume from
    assert named.parent == run_dir / "checkpoints" and checkpoint_step(named) == 1 and finite(named)
    assert not (run_dir / "export").exists()  # no export of NaN weights
    assert line.endswith("(rerun with a lower optim.lr: it resumes from there)")


def test_a_resume_may_lower_the_learning_rate_and_trains_at_the_new_one(tmp_path, monkeypatch, capsys):
    """The NaN line says "rerun with a lower optim.lr: it resumes from there". The resume check refused
    exactly that ("holds a run with another config (optim.lr: ...)"), and Lightning would have restored
    the checkpoint's learning rate anyway. Now a run continued with more steps and a lower optim.lr
    trains its new steps at the new rate."""
    run_dir = tmp_path / "run"
    two = [*SR, "log.every_n_steps=1", f"hydra.run.dir={run_dir}"]
    assert train_sr([*two, "optim.lr=1e-4"], monkeypatch) == 0, capsys.readouterr().err[-2000:]
    three = [a if not a.startswith("stages=") else a.replace("steps: 2", "steps: 3") for a in two]
    assert train_sr([*three, "optim.lr=1e-6"], monkeypatch) == 0, capsys.readouterr().err[-2000:]
    rates = {  # each attempt's own logs: logs/, logs-resumed-1/
        int(row["step"]): float(row["lr/transformer_lora"])
        for log in run_dir.glob("logs*/metrics.csv")
        for row in csv.DictReader(log.open())
        if row.get("lr/transformer_lora")
    }
    assert rates == {1: 1e-4, 2: 1e-4, 3: 1e-6}, rates


def test_train_grpo_stops_at_the_first_nan_and_keeps_the_last_finite_checkpoint(grpo_nan):
    status, line, run_dir, err, _ = grpo_nan
    assert status == 3, err[-2000:]
    assert "Traceback" not in err
    assert "step 2" in line and ("loss term" in line or "weight" in line), line
    written = sorted((run_dir / "checkpoints").glob("*.safetensors"))
    assert written and all(finite(p) for p in written)
    assert not (run_dir / "adapter").exists()  # the final adapter is never written from NaN weights


def test_a_nan_checkpoint_is_never_written(tmp_path):
    from coz.errors import TrainingDiverged
    from coz.run.checkpoint_files import save_checkpoint_file

    path = tmp_path / "step.safetensors"
    state = {"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])}
    with pytest.raises(TrainingDiverged, match="state_dict/b"):
        save_checkpoint_file({"state_dict": state, "coz_step": 1}, path)
    assert not path.exists()


def test_train_grpo_refuses_a_train_sr_checkpoint(sr_nan, grpo_nan, tmp_path, monkeypatch, capsys):
    checkpoint = sr_nan[2] / "checkpoints" / "step_0000001.safetensors"
    photos = grpo_nan[4]
    args = [*grpo_args(photos), f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert train_grpo(args, monkeypatch) == 2
    line = last_line(capsys)
    assert str(checkpoint) in line and "coz.train_sr" in line and "coz.train_grpo" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_sr_refuses_a_train_grpo_checkpoint(grpo_nan, tmp_path, monkeypatch, capsys):
    checkpoint = sorted((grpo_nan[2] / "checkpoints").glob("step_*.safetensors"))[0]
    args = [*SR, f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert train_sr(args, monkeypatch) == 2
    line = last_line(capsys)
    assert str(checkpoint) in line and "coz.train_grpo" in line and "coz.train_sr" in line, line


def test_train_sr_refuses_a_checkpoint_of_another_backbone(sr_nan, tmp_path, monkeypatch, capsys):
    checkpoint = sr_nan[2] / "checkpoints" / "step_0000001.safetensors"  # backbone=tiny_sd3 (smoke)
    args = [*SR, "backbone=tiny_sd21", f"resume={checkpoint}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert train_sr(args, monkeypatch) == 2
    line = last_line(capsys)
    assert str(checkpoint) in line and "backbone=tiny_sd3" in line and "backbone=tiny_sd21" in line, line
    # the refused run's folder is gone, and so is Hydra's log handler into it: the next record this
    # process logs (a later run, an API call) would otherwise fail reopening the removed log file
    assert not (tmp_path / "run").exists()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [h for lg in loggers for h in getattr(lg, "handlers", [])]
    assert not [h for h in handlers if str(tmp_path / "run") in getattr(h, "baseFilename", "")]
