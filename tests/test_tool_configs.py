"""One config root per tool: conf/<tool>/ holds the tool's config and its own groups (``experiment``
is a real group), conf/shared/ the groups several tools compose; ``--help`` and shell completion offer
exactly the tool's groups; ``prompt=none``."""

from __future__ import annotations

import functools

import pytest
from hydra import compose, initialize_config_dir
from inprocess_cli import run_cli

from coz.run.cli import quote_null_choices, tool_config_dir, tool_groups_help

TOOLS = ("zoom", "evaluate", "train_sr", "train_grpo")
GROUPS = {  # what each tool composes, and so all that --help and completion may offer
    "zoom": {"zoom", "backbone", "prompt", "logger"},
    "evaluate": {"zoom", "backbone", "prompt", "method", "dataset", "metrics", "logger", "experiment"},
    "train_sr": {"backbone", "degradation", "logger", "experiment"},
    "train_grpo": {"prompt", "critic", "logger", "experiment"},
    "app": set(),
    "study": set(),
}


def composed(tool: str, overrides: list[str]):
    """(the tool's config with Hydra's node, its ``--help`` group lines), composed once per test
    session: read them, never change them."""
    return _composed(tool, tuple(overrides))


@functools.cache
def _composed(tool: str, overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        cfg = compose(config_name=tool, overrides=list(overrides), return_hydra_config=True)
        return cfg, tool_groups_help(tool, cfg.hydra.runtime.choices)


def run_tool(tool: str, args: list[str], capfd, monkeypatch) -> tuple[int, str, str]:
    """``python -m coz.<tool> ARGS`` through the same entry point in this process (tests/inprocess_cli.py):
    its exit status, stdout and stderr."""
    from coz.run.extras import tool_main

    capfd.readouterr()
    code = run_cli(functools.partial(tool_main, tool), args, monkeypatch)
    out, err = capfd.readouterr()
    return code, out, err


def groups_of(help_text: str) -> set[str]:
    return {line.split(":")[0] for line in help_text.splitlines()} - {"(none)"}


def completion(tool: str):
    """Hydra's shell completion of ``coz-<tool>``, in-process, on the search path ``hydra.main`` gives
    the tool."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.bash_completion import BashCompletion
    from hydra._internal.utils import create_config_search_path

    return BashCompletion(
        ConfigLoaderImpl(config_search_path=create_config_search_path(tool_config_dir(tool)))
    )


def completed_groups(tool: str) -> set[str]:
    """The groups completion offers for ``coz-<tool> <TAB>`` (Hydra's own ``hydra/`` aside)."""
    offered, _ = completion(tool)._query_config_groups("", config_name=tool, words=[])
    return {name.rstrip("=/") for name in offered} - {"hydra"}


def test_each_tool_lists_only_its_own_groups():
    for tool in GROUPS:
        _, text = composed(tool, ["input=x"] if tool == "zoom" else [])
        assert groups_of(text) == GROUPS[tool], tool
    assert (
        "experiment: cnn, none, paper, paper_osediff, slurm, smoke, tiny_sd21" in composed("train_sr", [])[1]
    )


@pytest.mark.parametrize("tool", sorted(GROUPS))
def test_completion_offers_exactly_the_tools_groups(tool):
    assert completed_groups(tool) == GROUPS[tool]


def test_completion_of_the_command_line_tool(capfd, monkeypatch):
    """``coz-zoom <TAB>`` as the shell asks it (through ``hydra.main``): zoom's groups and keys and no
    other tool's groups."""
    monkeypatch.setenv("COMP_LINE", "coz-zoom ")
    code, stdout, stderr = run_tool("zoom", ["-sc", "query=bash"], capfd, monkeypatch)
    assert code == 0, stderr
    offered = set(stdout.split())
    assert {"zoom=", "backbone=", "prompt=", "logger=", "input=", "zoom."} <= offered
    others = set().union(*GROUPS.values()) - GROUPS["zoom"] | {"evaluate", "train_sr", "train_grpo", "shared"}
    assert not {name for name in offered if name.rstrip("=/.") in others}


def test_completion_lists_a_shared_groups_options():
    assert completion("train_sr")._query("train_sr", "backbone=tiny") == [
        "backbone=tiny_s3diff",
        "backbone=tiny_sd21",
        "backbone=tiny_sd3",
    ]


def test_experiment_is_a_real_group_of_each_tool():
    """The same name picks each tool's own preset, and Hydra records it as a group choice."""
    sr, _ = composed("train_sr", ["experiment=smoke"])
    grpo, _ = composed("train_grpo", ["experiment=smoke"])
    evaluate, _ = composed("evaluate", ["experiment=smoke"])
    assert sr.backbone.name == "tiny_sd3" and sr.hydra.runtime.choices.experiment == "smoke"
    assert grpo.critic.name == "tiny" and grpo.prompt.name == "tiny_vlm"
    assert evaluate.metrics.names and evaluate.hydra.runtime.choices.experiment == "smoke"
    assert composed("train_sr", [])[0].hydra.runtime.choices.experiment == "none"
    assert quote_null_choices(["experiment=smoke", "prompt=null"]) == [
        "experiment=smoke",
        "prompt='null'",
    ]


def test_prompt_none_works_in_compose_and_null_on_the_command_line():
    assert composed("zoom", ["input=x"])[0].hydra.runtime.choices.prompt == "none"  # the YAML default
    for overrides in (["prompt=none"], ["prompt='null'"], quote_null_choices(["prompt=null"])):
        cfg, _ = composed("evaluate", overrides)
        assert cfg.prompt.name == "null", overrides


def test_help_shows_the_description_and_only_the_tools_groups(capfd, monkeypatch):
    code, stdout, stderr = run_tool("train_grpo", ["--help"], capfd, monkeypatch)
    assert code == 0, stderr
    head = stdout.split("== Config ==")[0]
    assert head.startswith("coz-train-grpo: align the prompt VLM")
    assert "critic: internvl, keyword, qwen7b, tiny" in head and "experiment: figure6" in head
    assert "backbone:" not in head and "method:" not in head and "evaluate/" not in head


@pytest.mark.parametrize("tool", ["evaluate", "train_sr"])
def test_unknown_preset_is_refused_with_the_choices(tool):
    with pytest.raises(Exception, match="experiment"):
        composed(tool, ["experiment=nope"])


def test_the_readme_slurm_command_composes(capfd, monkeypatch):
    """The README's SLURM line as typed: ``-m`` first (after an override, argparse refuses the rest),
    and its config composes with the submitit launcher (``--cfg hydra``, one shard of the sweep)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("python -m coz.evaluate -m hydra/launcher=")]
    args = line.split()[3:]
    assert args[0] == "-m"
    one_job = [a.split("=")[0] + "=" + a.split("=")[1].split(",")[0] for a in args[1:]]
    code, stdout, stderr = run_tool("evaluate", [*one_job, "--cfg", "hydra"], capfd, monkeypatch)
    assert code == 0, stderr[-2000:]
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in stdout


def test_a_shared_group_entry_shows_that_group_only():
    from hydra.core.object_type import ObjectType
    from hydra.plugins.config_source import ConfigLoadError

    from coz.run.shared_configs import SharedGroupSource

    backbone = SharedGroupSource("test", "coz://backbone")
    assert backbone.list("", ObjectType.GROUP) == ["backbone"]  # conf/shared/ also holds prompt, logger, ...
    assert "tiny_sd3" in backbone.list("backbone", ObjectType.CONFIG)
    assert backbone.load_config("backbone/bicubic").config.name == "bicubic"
    assert not backbone.is_group("prompt") and not backbone.is_config("prompt/vlm")
    with pytest.raises(ConfigLoadError, match="coz://backbone"):
        backbone.load_config("prompt/vlm")
    help_ = SharedGroupSource("test", "coz://hydra/help")
    assert help_.list("", None) == ["hydra"] and help_.list("hydra", None) == ["help"]
    assert help_.list("hydra/help", None) == ["coz"]
    assert not SharedGroupSource("test", "coz://no_such_group").available()


def test_configs_cite_docs_and_examples_by_url_under_the_projects_source():
    """The configs ship in the wheel, docs/ and examples/ do not: a config names them by URL, and
    every URL it gives names a file of this checkout (pyproject's [project.urls] Source)."""
    import re
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    source = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    cited = []
    for path in (repo / "conf").rglob("*.yaml"):
        text = path.read_text()
        bare = re.findall(r"(?<![/\w])(?:docs|examples)/[\w./-]+", text)
        assert not bare, f"{path}: {bare} (the wheel has no docs/ or examples/: cite {source}/blob/main/...)"
        cited += re.findall(re.escape(source) + r"/blob/main/([\w./-]+\w)", text)
    assert cited
    assert all((repo / rel).is_file() for rel in cited), cited


@pytest.mark.parametrize("tool", sorted(GROUPS))
def test_every_tool_reads_its_sweeps_outcomes_back_under_any_launcher(tool):
    """A -m sweep's jobs leave their outcomes in the sweep folder (coz.run.sweep); the callback that
    reads them back is what lists the failed jobs and sets the exit code, whatever the launcher."""
    cfg, _ = composed(tool, [])
    assert cfg.hydra.callbacks.sweep_outcomes._target_ == "coz.run.sweep.SweepOutcomes"
