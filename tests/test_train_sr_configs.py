"""coz.train_sr's configs: every preset composes, bad options fail in one line before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from coz.errors import CozError
from coz.run.cli import CONFIG_DIR, quote_null_choices, tool_config_dir
from coz.train_sr.tool import check_config

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "train_sr" / "experiment").glob("*.yaml"))


def compose_train(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=tool_config_dir("train_sr"), version_base="1.3"):
        return compose(
            config_name="train_sr",
            overrides=quote_null_choices(overrides),
            return_hydra_config=hydra,
        )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset):
    cfg = compose_train([f"experiment={preset}"], hydra=preset == "slurm")
    assert cfg.stages and cfg.optim.lr > 0
    if preset == "slurm":
        assert "submitit" in cfg.hydra.launcher._target_


def test_defaults_are_the_papers_recipe():
    cfg = compose_train([])
    assert cfg.backbone.name == "sd3" and cfg.degradation.scale == 4
    assert [(s.degradation, s.steps) for s in cfg.stages] == [("realesrgan", 25000), ("bicubic", 20000)]
    assert (cfg.loss.l2, cfg.loss.lpips, cfg.loss.dmd, cfg.loss.reg_diffusion) == (1.0, 2.0, 1.0, 1.0)
    o = cfg.optim
    assert (o.lr, list(o.betas), o.weight_decay, o.eps, o.max_grad_norm) == (
        5e-5,
        [0.9, 0.999],
        1e-2,
        1e-8,
        1.0,
    )
    assert (cfg.data.batch_size, o.accumulate, cfg.checkpoint.every_n_steps) == (2, 2, 5000)
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "offline"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], r"data.sources=\[\]: must be your training images"),
        (["data.sources=[{path: x}]", "backbone=s3diff"], "backbone.name=s3diff: no such backbone"),
        (["data.sources=[{path: x}]", "trainer.strategy=horovod"], "trainer.strategy"),
        (["data.sources=[{path: x}]", "data.crop=100"], "multiple of 32"),
        (["data.sources=[{path: x}]", "data.crop=-32"], "positive multiple of 32"),
        (["data.sources=[{path: x}]", "optim.lr=-1e-3"], "optim.lr"),
        (["data.sources=[{path: x}]", "degradation.resize_back=bicubc"], "degradation.resize_back"),
        (["data.sources=[{path: x}]", "stages=[{degradation: blur, steps: 3}]"], "degradation"),
        (
            ["data.sources=[{path: x}]", "checkpoint.keep=-1"],
            "checkpoint.keep=-1: must be a whole number >= 0",
        ),
        (["data.sources=[{path: x}]", "checkpoint.every_n_steps=1.5"], "checkpoint.every_n_steps"),
        (["data.sources=[{path: x}]", "seed=-1"], "seed=-1: must be a whole number from 0 to 4294967295"),
        (["data.sources=[{path: x, prob: half}]"], "data.sources.0.prob=half: must be a number >= 0 or size"),
        (["data.sources=[{path: x}]", "+trainer.max_tme=1"], "trainer.max_tme: not an argument of lightning"),
        (["data.sources=[{path: x}]", "trainer.precision=15"], "trainer.precision=15: must be one of auto"),
        (
            ["data.sources=[{path: x}]", "degradation.second.kernel.kernel_prob=[0.5,0.5]"],
            r"degradation.second.kernel.kernel_prob=\[0.5, 0.5\]: must give one probability per kernel",
        ),
    ],
)
def test_bad_options_fail_in_one_line(overrides, message):
    with pytest.raises(CozError, match=message) as err:
        check_config(compose_train(overrides))
    assert "\n" not in str(err.value)


def test_resume_without_a_checkpoint(tmp_path):
    """resume=auto starts afresh in an empty folder; a path without a checkpoint is one line."""
    from coz.run.checkpoint_files import resume_from

    assert resume_from("auto", tmp_path) is None and resume_from("none", tmp_path) is None
    with pytest.raises(CozError, match=f"resume={tmp_path}: no checkpoint there"):
        resume_from(str(tmp_path), tmp_path)


def test_lpips_without_weights_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from coz.train_sr.losses import LPIPSLoss

    with pytest.raises(CozError, match="loss.lpips=0") as err:
        LPIPSLoss(pretrained_path=str(tmp_path / "missing.pth"))
    assert "\n" not in str(err.value)


def test_checkpoint_format_round_trip(tmp_path):
    import numpy as np
    import torch

    from coz.run.checkpoint_files import load_checkpoint_file, save_checkpoint_file

    ckpt = {
        "state_dict": {"a.lora_up.weight": torch.randn(3, 2)},
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                "param_groups": [{"betas": (0.9, 0.999), "params": [0]}],
            }
        ],
        "coz": {
            "rng": {
                "numpy": ("MT19937", np.arange(5, dtype=np.uint32), 2, 0, 0.0),
                "torch": torch.get_rng_state(),
            }
        },
        "global_step": 7,
        "none": None,
    }
    save_checkpoint_file(ckpt, tmp_path / "c.safetensors")
    back = load_checkpoint_file(tmp_path / "c.safetensors")
    assert torch.equal(back["state_dict"]["a.lora_up.weight"], ckpt["state_dict"]["a.lora_up.weight"])
    assert back["optimizer_states"][0]["state"][0]["exp_avg"].sum() == 2
    assert back["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["global_step"] == 7 and back["none"] is None
    assert torch.equal(back["coz"]["rng"]["torch"], ckpt["coz"]["rng"]["torch"])


def test_the_typed_config_fills_list_items_and_passes_other_trainer_arguments_on():
    """A source without prob/limit and a stage without a name read as documented (prob 1, no limit,
    the stage named by its degradation); any other lightning.Trainer argument passes through."""
    from coz.train_sr.stages import Stages

    cfg = check_config(
        compose_train(
            [
                "data.sources=[{path: x}, {path: y, prob: size, limit: 3}]",
                "stages=[{degradation: bicubic, steps: 2}]",
                "+trainer.max_time=00:00:01:00",
                "trainer.devices=auto",
                "trainer.precision=32",
            ]
        )
    )
    assert [(s.path, s.prob, s.limit) for s in cfg.data.sources] == [("x", 1.0, None), ("y", "size", 3)]
    assert [(s.name, s.degradation, s.steps) for s in Stages(cfg.stages).stages] == [
        ("bicubic", "bicubic", 2)
    ]
    assert cfg.trainer.max_time == "00:00:01:00" and cfg.trainer.devices == "auto"
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.data.crop, int)


def test_a_backbone_of_ones_own_is_refused_in_one_line():
    """A config with _target_ passes the schema (it has none) but coz.train_sr has no generator for it."""
    cfg = compose_train(["data.sources=[{path: x}]"])
    cfg.backbone = {"_target_": "my.Net"}
    with pytest.raises(CozError, match="backbone=None: coz.train_sr trains sd3, tiny_sd3"):
        check_config(cfg)
