"""W&B grouping promises (README, coz/run/wandb_run.py): ``logger.group`` wins over everything, and
without it an ``experiment=`` preset's runs are grouped as ``<tool>/<preset>``."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from coz.run.cli import quote_null_choices, tool_config_dir
from coz.run.wandb_run import wandb_init_args


def test_logger_group_overrides_the_sweep_and_the_preset(tmp_path):
    cfg = OmegaConf.create({"group": "my-comparison"})
    assert wandb_init_args(cfg, tmp_path, "zoom", {}, group="sweep-folder")["group"] == "my-comparison"
    assert wandb_init_args(OmegaConf.create({}), tmp_path, "zoom", {}, group="sweep-folder")["group"] == (
        "sweep-folder"
    )


def test_a_presets_runs_are_grouped_by_tool_and_preset(tmp_path):
    with initialize_config_dir(config_dir=tool_config_dir("train_sr"), version_base="1.3"):
        cfg = compose(
            config_name="train_sr",
            overrides=quote_null_choices(["experiment=smoke"]),
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # the job's Hydra state, as a run of the tool has it
    try:
        args = wandb_init_args(OmegaConf.create({}), tmp_path, "train_sr", {})
    finally:
        HydraConfig.instance().cfg = None
    assert args["group"] == "train_sr/smoke"
