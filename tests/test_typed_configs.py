"""Typed configs (coz.run.schema): every preset and group option of every tool matches its schema, and
every leaf key of every tool, given a value of the wrong type, is refused in one line naming the key
(exit 2 from the command line, nothing written)."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from inprocess_cli import run_cli
from omegaconf import DictConfig, OmegaConf

from coz.app.schema import App
from coz.evaluate.schema import EvaluateTool
from coz.run.cli import CONFIG_DIR, quote_null_choices, tool_config_dir
from coz.run.schema import ConfigError, Rule, config_key, typed
from coz.study.schema import StudyTool
from coz.train_grpo.schema import TrainGRPOTool
from coz.train_sr.schema import TrainSR
from coz.zoom.schema import ZoomTool

SCHEMAS: dict[str, type] = {
    "zoom": ZoomTool,
    "app": App,
    "train_grpo": TrainGRPOTool,
    "train_sr": TrainSR,
    "evaluate": EvaluateTool,
    "study": StudyTool,
}
REQUIRED = {  # what a tool needs to compose at all
    "zoom": ["input=x"],
    "app": [],
    "train_grpo": [],
    "train_sr": ["data.sources=[{path: x}]"],
    "evaluate": [],
    "study": [],  # command=??? is the first argument on the command line
}
# options of a shared group that a tool's schema refuses (tested below): GRPO trains a VLM policy only,
# train_sr the backbones it has a generator for
REFUSED = {
    "train_grpo": ["prompt=dape", "prompt=none", "prompt=null", "prompt=tiny_dape"],
    "train_sr": [f"backbone={b}" for b in ("bicubic", "nearest", "s3diff", "spandrel", "tiny_s3diff")],
}


@functools.cache
def options(tool: str) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """(None, no overrides): the default config; then (group, its overrides) for each option of each
    of the tool's groups. A group's default option is the default config itself (the same compose)."""
    root = Path(CONFIG_DIR)
    variants: list[tuple[str | None, tuple[str, ...]]] = [(None, ())]
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        choices = compose(
            config_name=tool, overrides=REQUIRED[tool], return_hydra_config=True
        ).hydra.runtime.choices
    for group in sorted(g for g in choices if not g.startswith("hydra")):
        folder = root / tool / group if (root / tool / group).is_dir() else root / "shared" / group
        for option in sorted(folder.glob("*.yaml")):
            override = f"{group}={option.stem}"
            if override not in REFUSED.get(tool, []):
                variants.append((group, () if option.stem == choices[group] else (override,)))
    return tuple(variants)


def composed(tool: str, overrides: typing.Sequence[str]) -> DictConfig:
    """The tool's config with ``overrides``, composed once per test session (copy it to change it)."""
    return _composed(tool, tuple(overrides))


@functools.cache
def _composed(tool: str, overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        return compose(config_name=tool, overrides=quote_null_choices([*REQUIRED[tool], *overrides]))


@functools.cache
def typed_option(tool: str, overrides: tuple[str, ...]) -> DictConfig:
    """``typed`` of that composed config, once per test session (read it, never change it)."""
    return typed(SCHEMAS[tool], composed(tool, overrides))


def leaves(node: DictConfig, path: str = "") -> typing.Iterator[tuple[str, object, Rule | None]]:
    """(dotted key, declared type, its rule if it has one) of every typed leaf."""
    schema = OmegaConf.get_type(node)
    hints = typing.get_type_hints(schema) if is_dataclass(schema) else {}
    for spec in fields(schema) if is_dataclass(schema) else ():
        key = config_key(spec)  # from_ is read from from=
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            yield from leaves(child, f"{path}{key}.")
        elif key not in ("name", "mode"):  # the option's own name: a group choice
            yield f"{path}{key}", hints[spec.name], spec.metadata.get("rule")


def wrong_value(declared: object) -> object:
    """A value of another type than ``declared``."""
    if typing.get_origin(declared) is list:
        return "abc"
    kinds = set(typing.get_args(declared)) or {declared}
    if kinds & {int, float}:
        return "abc"
    if bool in kinds:
        return "maybe"
    if str in kinds:
        return [1, 2]
    return "abc"  # lists


def cases(tool: str) -> typing.Iterator[tuple[tuple[str, ...], str, object, Rule | None, tuple]]:
    """(overrides, key, wrong value, the key's rule, what the refusal depends on): the top-level keys
    with the defaults, each option's own keys with that option."""
    groups = {spec.name for spec in fields(SCHEMAS[tool]) if "options" in spec.metadata}
    for group, overrides in options(tool):
        cfg = typed_option(tool, overrides)
        mine = [
            (key, declared, rule)
            for key, declared, rule in leaves(cfg)
            if (key.startswith(f"{group}.") if group else key.split(".")[0] not in groups)
        ]
        if not mine:  # a preset (experiment=...) sets other groups' keys: tried with those groups
            continue
        # A wrong value is refused by the schema node it merges into: the option's schema (the same
        # class wherever a group is shared, e.g. coz.zoom.schema.BACKBONES in zoom, evaluate and
        # train_sr) and its typed keys, or the tool's own schema for the top-level keys.
        schema = OmegaConf.get_type(cfg[group]) if group else SCHEMAS[tool]
        for key, declared, rule in mine:
            yield overrides, key, wrong_value(declared), rule, (schema, tuple(mine))


@pytest.mark.parametrize("tool", sorted(SCHEMAS))
def test_every_preset_and_option_matches_its_schema(tool):
    for _, overrides in options(tool):
        typed_option(tool, overrides)  # raises on a key or value the schema refuses


@pytest.mark.parametrize(("tool", "option"), [(t, o) for t in sorted(REFUSED) for o in REFUSED[t]])
def test_an_option_the_tool_cannot_use_is_refused_in_one_line(tool, option):
    group = option.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{group}\.name=\w+: no such {group} \(use one of"):
        typed(SCHEMAS[tool], composed(tool, [option]))


def test_every_leaf_key_refuses_a_value_of_the_wrong_type_in_one_line():
    """... and says what the key allows: its rule's words (range, choices), as for a value out of range.
    Every tool's keys; a shared group's option (same schema, same typed keys) once, in the first tool
    that composes it: its refusals do not depend on the tool (``typed`` merges the option's node into
    that schema alone)."""
    tried: set[tuple] = set()
    for tool in sorted(SCHEMAS):
        covered = 0
        for overrides, key, value, rule, refused_by in cases(tool):
            covered += 1
            if (refused_by, key) in tried:
                continue
            tried.add((refused_by, key))
            bad = copy.deepcopy(composed(tool, overrides))
            OmegaConf.update(bad, key, value, merge=True)  # as Hydra applies an override
            try:
                typed(SCHEMAS[tool], bad)
            except ConfigError as refused:
                message = str(refused)
            else:
                pytest.fail(f"{tool} {overrides} {key}={value} was accepted")
            assert "\n" not in message and message.startswith(f"{key}="), (tool, overrides, key, message)
            if rule is not None:
                assert message.endswith(f": must be {rule.allowed}"), (tool, overrides, key, message)
        assert covered >= 10, (tool, covered)  # every leaf of the tool was tried (here or before)


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("zoom", ["zoom.steps=abc"], "error: zoom.steps=abc: must be a whole number >= 1"),
        ("zoom", ["zom.steps=2"], "error: zom.steps: no such key; did you mean zoom.steps?"),
        ("zoom", ["+zom.steps=2"], "error: zom: no such key; did you mean zoom?"),
        # an option no config group has: the nearest one and the group's options, not Hydra's search path
        (
            "zoom",
            ["backbone=spam"],
            "error: backbone=spam: no such option; did you mean span? (backbone: bicubic, ",
        ),
        ("evaluate", ["prompt=nul"], "error: prompt=nul: no such option; did you mean null? (prompt: dape, "),
        # a sweep Hydra refuses before its first job: its sweep folder (only multirun.yaml) goes too
        ("zoom", ["-m", "backbone=span,spam"], "error: backbone=spam: no such option; did you mean span?"),
        (
            "zoom",
            ["prompt=vlm", "prompt.cache=foo"],
            "error: prompt.cache=foo: must be one of none, memory, disk",
        ),
        (
            "zoom",
            ["backbone=sd3", "+backbone.lora_rnk=8"],
            "error: backbone.lora_rnk: no such key; did you mean",
        ),
        (
            "train_grpo",
            ["experiment=smoke", "grpo.steps=abc"],
            "error: grpo.steps=abc: must be a whole number >= 1",
        ),
        ("train_grpo", ["rewards.ngram=-2"], "error: rewards.ngram=-2: must be a whole number >= 1"),
        ("train_grpo", ["trainer=gpu"], "error: trainer=gpu: must be a section of keys"),
        # a sweep preset: refused once, before the sweep makes its folder (was: every job "crashed")
        (
            "evaluate",
            ["experiment=smoke", "shard.count=abc"],
            "error: shard.count=abc: must be a whole number >= 1",
        ),
        # before the VLM loads
        ("evaluate", ["prompt.cache=foo"], "error: prompt.cache=foo: must be one of none, memory, disk"),
        (
            "train_sr",
            ["experiment=smoke", "data.crop=big"],
            "error: data.crop=big: must be a positive multiple of 32 (4x down, then the VAE's 8x)",
        ),
        ("train_sr", ["experiment=smoke", "optim.lr=fast"], "error: optim.lr=fast: must be a number >= 0"),
        # from= is a Python keyword: a field read from its config key (coz.run.schema.alias)
        ("study", ["build", "from=a", "per_rater=abc"], "error: per_rater=abc: must be a whole number >= 1"),
        ("study", ["build", "from={a: 1}"], "error: from=[{a: 1}]: must be a list of words"),
        ("study", ["build", "fro=a"], "error: fro: no such key; did you mean from?"),
        # the app: the page needs a default backbone and prompt mode, and the job just done stays downloadable
        ("app", ["backbones=[]"], "error: backbones=[]: must be a list of at least one of bicubic, "),
        ("app", ["prompts=[]"], "error: prompts=[]: must be a list of at least one of dape, "),
        ("app", ["keep_jobs=0"], "error: keep_jobs=0: must be a whole number >= 1"),
        # a key of a real section: the nearest there, or what the section has, never a look-alike elsewhere
        (
            "train_sr",
            ["experiment=smoke", "trainer.max_steps=5"],
            "error: trainer.max_steps: no such key (+trainer.KEY=VALUE passes any other lightning.Trainer",
        ),
        (
            "train_grpo",
            ["trainer.devics=2"],
            "error: trainer.devics: no such key; did you mean trainer.devices?",
        ),
        # Lightning counts every optimiser's step: +trainer.max_steps=3 trained 1 of SD3's steps, exit 0
        (
            "train_sr",
            ["experiment=smoke", "+trainer.max_steps=3"],
            "error: trainer.max_steps: coz counts the training itself; set the steps with stages=[...]",
        ),
        # a key of the group's other options: which have it (was "did you mean prompt.adapter?")
        (
            "zoom",
            ["prompt.adapter=run/adapter"],
            "error: prompt.adapter: not a key of this prompt; only prompt=vlm, prompt=vlm_ar1, prompt=tiny_vlm have it",
        ),
        (
            "zoom",
            ["zoom.vae_tiling=blended"],
            "error: zoom.vae_tiling: not a key of this zoom; only zoom.mode=full has it",
        ),
        (
            "train_sr",
            ["optim.zzzz=3"],
            "error: optim.zzzz: no such key; optim has: accumulate, betas, eps, lr,",
        ),
        (
            "train_sr",
            ["experiment=smoke", "checkpoint.every_n_step=5"],
            "error: checkpoint.every_n_step: no such key; did you mean checkpoint.every_n_steps?",
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_2_with_nothing_written(
    tool, args, message, tmp_path, capfd, monkeypatch
):
    """Through the tools' entry point (``python -m coz.<tool>`` runs ``tool_main``), in this process
    (tests/inprocess_cli.py): a fresh Python costs 3-5 CPU-s of imports. One program run, the study's
    (it imports no torch: about 1 CPU-s), keeps the fresh interpreter's one line and exit 2; each
    other tool's fresh-process refusal in one line is its own file's (test_zoom_cli, test_extras,
    test_grpo_train, test_evaluation_run)."""
    folder, sweep = tmp_path / "run", tmp_path / "sweep"
    argv = [*REQUIRED[tool], *args, f"hydra.run.dir={folder}", f"hydra.sweep.dir={sweep}"]
    if tool == "study" and args == ["build", "from=a", "per_rater=abc"]:
        result = subprocess.run(
            [sys.executable, "-m", f"coz.{tool}", *argv], capture_output=True, text=True, timeout=300
        )
        code, stderr = result.returncode, result.stderr
    else:
        from coz.run.extras import tool_main

        capfd.readouterr()
        code = run_cli(functools.partial(tool_main, tool), argv, monkeypatch)
        stderr = capfd.readouterr().err
    assert code == 2, stderr
    assert stderr.strip().splitlines() == [stderr.strip()], stderr
    assert stderr.startswith(message), stderr
    assert not folder.exists() and not sweep.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["stages=[{degradation: blur, steps: 3}]"],
            "stages.0.degradation=blur: must be one of realesrgan, bicubic",
        ),
        (["stages=[]"], "stages=[]: must be a list of at least one"),
        (["trainer.devices=two"], "trainer.devices=two: must be"),
        (["loss.dmd=-1"], "loss.dmd=-1.0: must be a number >= 0"),
        (["val.images=0"], "val.images=0: must be a whole number >= 1"),
        (
            ["degradation.first.kernel.sinc_prob=2"],
            "degradation.first.kernel.sinc_prob=2.0: must be a number from 0 to 1",
        ),
    ],
)
def test_train_sr_ranges_are_one_line(overrides, message):
    """What a type cannot say (ranges, choices, list items), in-process: the CLI path is the same
    check_config, tested above for the issue's examples."""
    from coz.train_sr.tool import check_config

    with pytest.raises(ConfigError) as refused:
        check_config(composed("train_sr", ["experiment=smoke", *overrides]))
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_a_users_own_component_is_untyped_after_a_typed_option_of_its_group():
    """``typed`` builds each schema's skeleton once and works on a copy: the option schema it put in
    one config's skeleton (backbone=sd3) must not type the next config's own component (_target_)."""
    typed(ZoomTool, composed("zoom", ["backbone=sd3"]))
    mine = copy.deepcopy(composed("zoom", []))
    OmegaConf.update(mine, "backbone", {"_target_": "my.Backbone", "lora_rank": "any"}, merge=False)
    assert typed(ZoomTool, mine).backbone.lora_rank == "any"
