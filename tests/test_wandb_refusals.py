"""``logger=wandb`` that cannot work is one line before the run writes anything (README "Dashboards",
coz/run/wandb_run.py): an unknown ``WANDB_MODE`` (exit 2), and an online run without a reachable W&B
server (exit 3, within seconds, not wandb's 90-s wait and traceback). Through each tool's command line."""

from __future__ import annotations

import time

import pytest
from inprocess_cli import run_cli

# each tool's smallest command that composes; the refusal comes before any of it runs
TOOLS = {
    "zoom": ["backbone=bicubic", "prompt=none", "zoom.steps=1", "zoom.size=64"],  # + input=, below
    "train_sr": ["experiment=smoke"],
    "train_grpo": ["experiment=smoke"],
    "evaluate": ["experiment=smoke", "hydra.mode=RUN", "method=nn"],  # one job, not the preset's sweep
}


def command(tool: str, tmp_path) -> list[str]:
    """The tool's arguments, with W&B chosen and the run folder in ``tmp_path / "run"``."""
    args = [*TOOLS[tool], "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}"]
    if tool == "zoom":  # a real photo: the zoom would run as far as W&B before the refusal existed
        from PIL import Image

        Image.new("RGB", (64, 64), (90, 140, 60)).save(tmp_path / "photo.png")
        args.append(f"input={tmp_path / 'photo.png'}")
    return args


def tool_main(tool: str):
    import importlib

    return importlib.import_module(f"coz.{tool}.tool").main


def refusal(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines  # one line, nothing else
    return lines[0]


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_wandb_mode_is_one_line_naming_it_before_anything_is_written(
    tool, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WANDB_MODE", "junk")
    run_dir = tmp_path / "run"
    code = run_cli(tool_main(tool), command(tool, tmp_path), monkeypatch)
    line = refusal(capsys)
    assert code == 2
    assert line.startswith("error: WANDB_MODE=junk: ") and "offline, online, disabled" in line, line
    assert not run_dir.exists()  # not even Hydra's empty log: the command never started


def test_a_known_wandb_mode_other_than_the_configs_passes_the_check(monkeypatch):
    from omegaconf import OmegaConf

    from coz.run.wandb_run import check_wandb, wandb_mode

    cfg = OmegaConf.create({"name": "wandb", "mode": "offline"})
    for mode in ("offline", "disabled", "dryrun"):
        monkeypatch.setenv("WANDB_MODE", mode)
        check_wandb(cfg)
        assert wandb_mode(cfg) == mode
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(cfg) == "offline"  # logger.mode applies only when WANDB_MODE is unset


@pytest.mark.parametrize("tool", ["zoom", "train_sr"])
def test_wandb_online_without_the_network_is_one_line_within_seconds(
    tool, tmp_path, monkeypatch, capsys, no_network
):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    code = run_cli(tool_main(tool), command(tool, tmp_path), monkeypatch)
    seconds = time.monotonic() - started
    line = refusal(capsys)
    assert code == 3  # the machine (no network), not the command: an environment error
    assert line.startswith("error: W&B online needs the network: cannot reach api.wandb.ai:443"), line
    assert "WANDB_MODE=offline" in line and "wandb sync" in line
    assert seconds < 30, seconds  # wandb itself waits 90 s, then prints a traceback
    assert not run_dir.exists()


def test_a_w_and_b_server_that_does_not_answer_is_given_up_after_wandb_init_timeout(monkeypatch):
    """A server that never answers (here: a local one whose queue of connections is full, so the
    kernel drops the next one, as a firewall would) is given up after WANDB_INIT_TIMEOUT seconds."""
    import socket

    from omegaconf import OmegaConf

    from coz.errors import RunEnvironmentError
    from coz.run.wandb_run import check_wandb

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    for _ in range(4):  # fill the queue; none is accepted
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "1")
    started = time.monotonic()
    try:
        with pytest.raises(
            RunEnvironmentError, match=rf"cannot reach 127\.0\.0\.1:{port} \(no answer in 1 s\)"
        ):
            check_wandb(OmegaConf.create({"name": "both", "mode": "offline"}))
    finally:
        for sock in (*queued, server):
            sock.close()
    assert 0.9 < time.monotonic() - started < 5


def test_wandbs_own_refusals_are_one_line_environment_errors():
    """Reached, but refused: no login (what wandb.init raises without an API key) is exit 3 in one line."""
    import wandb

    from coz.run.exit_codes import classify

    code, line = classify(wandb.errors.UsageError("No API key configured. Use `wandb login` to log in."))
    assert code == 3 and line.startswith("W&B: No API key configured.") and "WANDB_MODE=offline" in line
