"""Users' own components: ``_target_`` configs built by hydra.utils.instantiate; trainer.* keys
reach lightning.Trainer."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from coz.backbones import build_backbone
from coz.errors import CozError
from coz.prompts import build_prompt_extractor
from coz.run.loggers import CsvLogger, build_logger
from coz.run.trainer import trainer_kwargs

USER_MODULE = textwrap.dedent(
    """
    import torch
    from coz.backbones.base import Backbone
    from coz.prompts.base import PromptExtractor

    class Flat(Backbone):  # a 4x "model" that paints everything one grey: its output is recognisable
        name = "flat"

        def __init__(self, level, device="cpu"):
            self.level = level

        def upscale(self, images, prompts):
            n, c, h, w = images.shape
            return torch.full((n, c, 4 * h, 4 * w), self.level)

    class Fixed(PromptExtractor):
        name = "fixed"

        def __init__(self, text, device="cpu"):
            self.text = text

        def extract(self, views, previous):
            return [self.text] * len(views)
    """
)


@pytest.fixture()
def user_code(tmp_path, monkeypatch):
    (tmp_path / "user_parts.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_users_backbone_from_config_dir_runs_the_zoom(user_code, tmp_path, monkeypatch, capfd):
    """The command line in this process (user_code puts the user's module on the path)."""
    from inprocess_cli import run_cli_here

    from coz.zoom import main

    conf = tmp_path / "myconf" / "backbone"
    conf.mkdir(parents=True)
    (conf / "flat.yaml").write_text("_target_: user_parts.Flat\nname: flat\nlevel: 0.25\n")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "in.png")
    args = ["--config-dir", str(tmp_path / "myconf"), "backbone=flat", "input=in.png", "zoom.steps=1"]
    args += ["logger=none", "save.gif=false", "save.strip=false", "hydra.run.dir=run"]
    result = run_cli_here(main, args, tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr[-2000:]
    state = np.asarray(Image.open(tmp_path / "run" / "images" / "in" / "state_1.png"))
    assert np.all(np.abs(state.astype(int) - 64) <= 1)  # 0.25 grey: the user's backbone made it
    assert json.loads((tmp_path / "run" / "run.json").read_text())["choices"]["backbone"] == "flat"


def test_prompt_extractor_and_logger_targets(user_code, tmp_path):
    prompt = build_prompt_extractor(OmegaConf.create({"_target_": "user_parts.Fixed", "text": "moss"}))
    assert prompt.extract([Image.new("RGB", (8, 8))], [None]) == ["moss"]
    cfg = OmegaConf.create({"logger": {"_target_": "coz.run.loggers.CsvLogger", "name": "mine"}})
    assert isinstance(build_logger(cfg, tmp_path), CsvLogger) and (tmp_path / "metrics.csv").is_file()


def test_a_bad_target_is_one_line():
    with pytest.raises(CozError, match=r"^backbone\._target_=user_parts_missing\.Nope: ") as err:
        build_backbone(OmegaConf.create({"_target_": "user_parts_missing.Nope", "name": "x"}))
    assert "\n" not in str(err.value)


def test_every_trainer_key_reaches_lightning():
    cfg = OmegaConf.create({"accelerator": "cpu", "devices": 1, "max_time": "00:00:01:00", "logger": True})
    kwargs = trainer_kwargs(cfg, accelerator="cpu", devices=1, logger=False)
    assert kwargs == {"accelerator": "cpu", "devices": 1, "logger": True, "max_time": "00:00:01:00"}
    with pytest.raises(CozError, match=r"^trainer\.max_tme: not an argument of lightning\.Trainer$"):
        trainer_kwargs(OmegaConf.create({"max_tme": 1}))


def test_a_users_own_prompt_config_without_clean_passes_its_text_verbatim(user_code, tmp_path, monkeypatch):
    """As every released setting (prompt=vlm, prompt=dape: clean: false), not cleaned behind the user's back."""
    from inprocess_cli import run_cli

    from coz.zoom.tool import main

    text = "moss, Moss, moss; in the first image, bark"  # clean_prompt would make it "moss, bark"
    conf = tmp_path / "myconf" / "prompt"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(f"_target_: user_parts.Fixed\ntext: '{text}'\n")
    (conf / "mine_clean.yaml").write_text(f"_target_: user_parts.Fixed\ntext: '{text}'\nclean: true\n")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "in.png")
    rows = {}
    for option in ("mine", "mine_clean"):
        args = ["--config-dir", str(tmp_path / "myconf"), f"prompt={option}", f"input={tmp_path / 'in.png'}"]
        args += ["backbone=bicubic", "zoom.steps=1", "zoom.size=64", f"hydra.run.dir={tmp_path / option}"]
        assert run_cli(main, [*args, "save.gif=false", "save.strip=false"], monkeypatch) == 0
        rows[option] = (tmp_path / option / "metrics.csv").read_text().splitlines()[1]
    assert rows["mine"].split(",", 3)[3] == f'"{text}",state_1.png'
    assert rows["mine_clean"].split(",", 3)[3] == '"moss, bark",state_1.png'  # clean: true still cleans


def test_a_named_prompt_option_without_clean_is_verbatim_too():
    from coz.prompts.schema import VLM, Extracted

    assert Extracted.clean is False and VLM.clean is False  # the typed config's value when unset
