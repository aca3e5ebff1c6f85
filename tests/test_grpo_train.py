"""``python -m coz.train_grpo``: presets, fail-fast errors, one step updates every adapter tensor and no
base weight, the saved adapter loads in coz.zoom, kill-and-resume continues exactly, the smoke preset,
and a learning test on the tiny policy."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from forked_ranks import fork_the_ranks
from hydra import compose, initialize_config_dir
from inprocess_cli import fork_program, run_cli
from safetensors.torch import load_file

from coz.errors import CozError
from coz.run.cli import quote_null_choices, tool_config_dir
from coz.train_grpo import tool
from coz.train_grpo.tool import main, preflight, run

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("none", "smoke", "figure6", "figure7", "rule", "swift", "unbiased")
# The tiny rollouts: top-10 sampling concentrates the random policy enough that a rule-rewarded word
# appears in some completions of a group and not others (a learning signal from the first step).
TARGET = "Illuminate"


def compose_grpo(overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir("train_grpo"), version_base="1.3"):
        return compose(config_name="train_grpo", overrides=quote_null_choices(overrides))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from coz.samples import write_samples

    folder = tmp_path_factory.mktemp("photos")
    write_samples(folder)
    return folder


def tiny_overrides(photos: Path, *overrides: str) -> list[str]:
    """The tiny loop on ``photos`` with the rule critic rewarding TARGET, as command-line overrides."""
    return [
        "experiment=smoke",
        f"input={photos}",
        "data.write_samples=false",
        "logger=csv",
        "critic=keyword",
        f"critic.words=[{TARGET}]",
        "grpo.top_k=10",
        "grpo.generations=4",
        *overrides,
    ]


def tiny(photos: Path, *overrides: str):
    return compose_grpo(tiny_overrides(photos, *overrides))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_real_size_twin_has_the_3b_models_shapes_and_the_papers_lora():
    """prompt.shape=3b: Qwen2.5-VL-3B-Instruct's 3.75 B parameters; the paper's LoRA adapts the 7
    projections of its 36 language-model layers and nothing in the vision encoder."""
    import torch
    from peft import get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    from coz.prompts.tiny import qwen_3b_config
    from coz.train_grpo.policy import lora_config

    with torch.device("meta"):  # shapes only: no memory, no time
        model = Qwen2_5_VLForConditionalGeneration._from_config(qwen_3b_config(), dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976
    cfg = compose_grpo(["prompt=tiny_vlm", "prompt.shape=3b"])
    assert cfg.prompt.shape == "3b"
    adapted = get_peft_model(model, lora_config(cfg.lora))
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in adapted.named_parameters() if ".lora_A." in n}
    assert len(wrapped) == 36 * 7 and not any(".visual." in n for n in wrapped)
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    # r x (in + out) per projection: q and o 2048 -> 2048, k and v 2048 -> 256, MLP 2048 <-> 11008
    assert trainable == 36 * 8 * (2 * (2048 + 2048) + 2 * (2048 + 256) + 3 * (2048 + 11008)) == 14_966_784


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset):
    cfg = compose_grpo([f"experiment={preset}"])
    assert cfg.grpo.generations == (4 if preset == "rule" else 2) and cfg.rewards.weights.critic == 1.0
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.05)


def test_the_papers_defaults():
    cfg = compose_grpo([])
    assert (
        cfg.prompt.model == "Qwen/Qwen2.5-VL-3B-Instruct" and cfg.critic.model == "OpenGVLab/InternVL2_5-8B"
    )
    assert dict(cfg.rewards.weights) == {"critic": 1.0, "phrase": 0.5, "repetition": 0.5}
    assert cfg.data.val_fraction == 0.01 and cfg.grpo.steps == 10000 and cfg.grpo.scale_rewards == "group"
    assert compose_grpo(["experiment=figure7"]).critic.model == "Qwen/Qwen2.5-VL-7B-Instruct"


# A fresh interpreter that writes which of the heavy packages it had imported when the program ended.
HEAVY_PACKAGES = {"lightning", "torchmetrics", "torchvision", "transformers", "peft"}
# argv: the report file, then the command line.
REPORT_IMPORTS = f"""
import json, runpy, sys
report, sys.argv = sys.argv[1], ["coz.train_grpo", *sys.argv[2:]]
try:
    runpy.run_module("coz.train_grpo", run_name="__main__")
finally:
    with open(report, "w") as f:
        json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & {HEAVY_PACKAGES!r}), f)
"""


def test_missing_models_fail_in_one_line_naming_them_before_the_heavy_imports(photos, tmp_path):
    """The one program run of a refusal: exit 2, one line naming both models and how to get them,
    decided before Lightning or transformers is imported, so it comes in seconds (the checks before it,
    the config's types and rules, come earlier still)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "offline"}
    report = tmp_path / "imported.json"
    result = subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTS, str(report), "critic=internvl"]
        + [f"input={photos}", f"hydra.run.dir={tmp_path}/r"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in lines[0] and "OpenGVLab/InternVL2_5-8B" in lines[0]
    assert "hf download" in lines[0]
    assert not (tmp_path / "r").exists()  # refused before the run folder was claimed
    assert json.loads(report.read_text()) == []


def test_bad_options_are_refused_before_loading(photos, tmp_path):
    from coz.train_grpo.tool import check_config

    for bad in (
        "grpo.generations=1",
        "grpo.scale_rewards=rank",
        "checkpoint.every_n_steps=3",
        "grpo.steps=5",  # the run would end inside a generation round of 2 updates
        "grpo.top_p=0",
        "lora.r=0",
        "val.batch_size=0",
        "checkpoint.keep=-1",
        "data.size=510",  # the view is the center 1/4 of the state: 510 does not divide by data.factor=4
        "data.depths=[]",
        "rewards.max_penalty=0.5",
        "trainer.devices=0",  # a key coz reads among the trainer's free keys
        "critic.words=[]",  # the rule critic with no rule: refused here, not in the run's workers
    ):
        cfg = tiny(photos, "grpo.updates_per_generation=2", "grpo.steps=4", bad)
        with pytest.raises(CozError, match=bad.split("=")[0]):
            check_config(cfg)
    check_config(tiny(photos, "grpo.updates_per_generation=2", "grpo.steps=4"))  # and that one is fine
    with pytest.raises(CozError, match="no such folder"):
        run(tiny(photos, f"input={tmp_path}/nothing"), run_dir=tmp_path / "r")
    with pytest.raises(CozError, match="adapter_config.json"):
        preflight(tiny(photos, f"prompt.adapter={tmp_path}"))
    with pytest.raises(CozError, match="critic.revision: unset"):  # remote code only behind a pin
        check_config(compose_grpo(["critic=internvl", "critic.revision=null"]))
    with pytest.raises(CozError, match="'main' is not a commit hash"):
        check_config(compose_grpo(["critic=internvl", "critic.revision=main"]))


def test_a_given_folder_is_never_filled_with_the_sample_photos(tmp_path):
    """experiment=smoke writes the sample photos into data.root only; input=FOLDER is the user's."""
    empty = tmp_path / "mine"
    empty.mkdir()
    with pytest.raises(CozError, match=f"input={empty}: 0 image"):
        run(compose_grpo(["experiment=smoke", f"input={empty}", "logger=csv"]), run_dir=tmp_path / "r")
    assert not any(empty.iterdir())


def test_a_refused_smoke_run_writes_nothing_not_even_the_sample_photos(tmp_path, monkeypatch, capfd):
    """experiment=smoke writes the sample photos into data.root, but only once nothing can refuse the
    run any more: not before a resume= that names no checkpoint, not before a missing model."""
    from inprocess_cli import run_cli_here

    done = run_cli_here(
        main, ["experiment=smoke", "resume=/no/such.safetensors"], tmp_path, monkeypatch, capfd
    )
    assert done.returncode == 2, done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "error: resume=/no/such.safetensors: no checkpoint there (give a .safetensors checkpoint or a run folder)"
    ]
    assert list(tmp_path.iterdir()) == []  # no sample photos, no run folder, no outputs/

    def model_missing(cfg):
        raise CozError("prompt.model=Qwen/Qwen2.5-VL-3B-Instruct: not in the local cache")

    monkeypatch.setattr(tool, "preflight", model_missing)
    with pytest.raises(CozError, match="not in the local cache"):
        run(compose_grpo(["experiment=smoke", f"data.root={tmp_path}/samples"]), run_dir=tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_resuming_takes_the_checkpoint_with_the_most_steps(tmp_path):
    """A run that ended at step 60 (last) was continued and killed after its step-100 save: the
    next continuation starts from 100, not 60; an unreadable file is skipped."""
    from coz.run.checkpoint_files import LAST, newest_checkpoint, save_checkpoint_file

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert newest_checkpoint(folder) is None
    save_checkpoint_file({"coz_step": 60}, folder / LAST)
    assert newest_checkpoint(folder) == folder / LAST
    save_checkpoint_file({"coz_step": 100}, folder / "step_0000100.safetensors")
    save_checkpoint_file({"coz_step": 50}, folder / "step_0000050.safetensors")
    (folder / "step_0000200.safetensors").write_bytes(b"half a checkpoint")
    assert newest_checkpoint(folder) == folder / "step_0000100.safetensors"
    save_checkpoint_file({"coz_step": 100}, folder / LAST)
    assert newest_checkpoint(folder) == folder / LAST  # a tie goes to last


def test_a_fresh_start_drops_the_logs_of_an_earlier_start_killed_before_its_first_checkpoint(tmp_path):

    from coz.train_grpo.logs import RunLogs

    (tmp_path / "train.csv").write_text("step,total\n1,0.5\n2,0.5\n")
    (tmp_path / "rewards.csv").write_text("step,total\n0,0.5\n")
    RunLogs(tmp_path, None, resume_step=None).close()
    assert read_csv(tmp_path / "train.csv") == [] and read_csv(tmp_path / "rewards.csv") == []
    (tmp_path / "train.csv").write_text("step,total\n1,0.5\n2,0.5\n3,0.5\n")
    RunLogs(tmp_path, None, resume_step=2).close()
    assert [r["step"] for r in read_csv(tmp_path / "train.csv")] == ["1", "2"]


# The uninterrupted run of the kill-and-resume test, shared with the tests that inspect a trained module
# and with the learning test: a learning rate at which 4 steps teach the tiny policy the rule reward, two
# validation photos.
RUN_ARGS = (
    "optim.lr=1e-2",
    "data.val_fraction=0.5",
    "grpo.steps=4",
    "checkpoint.every_n_steps=2",
    "val.every_n_steps=3",
    "threads=1",  # the killed run is forked (tests/inprocess_cli.fork_program): the same in each run
)


TRAINED_PRINTED: list[str] = []  # what the trained fixture's run printed


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory):
    """Four steps of the tiny loop (keyword critic) through the command line's entry point, the trained
    module kept for inspection: (config, run folder, the policy as set-up built it, the module)."""
    from coz.run.progress import finished
    from coz.run.runtime import seed_everything
    from coz.train_grpo.policy import build_policy

    cfg = tiny(photos, *RUN_ARGS)
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    seed_everything(int(cfg.seed))
    initial, _ = build_policy(cfg.prompt, cfg.lora, "cpu")  # what setup() builds: same seed, same init
    fitted = []

    def keep(*args, _real=tool._fit, **kwargs):
        fitted.append(_real(*args, **kwargs))
        return fitted[-1]

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(tool, "_fit", keep)
        assert run_cli(main, [*tiny_overrides(photos, *RUN_ARGS), f"hydra.run.dir={run_dir}"], mp) == 0
    TRAINED_PRINTED.append(printed.getvalue())
    ((trainer, module),) = fitted
    assert trainer.global_step == 4
    bar = [c for c in finished if c.desc == "train_grpo"][-1]
    assert (bar.unit, bar.total, bar.initial, bar.n) == ("steps", 4, 0, 4)
    return cfg, run_dir, initial, module


def test_every_adapter_tensor_changes_and_no_base_weight_does(trained):
    cfg, run_dir, initial, module = trained
    rows = read_csv(run_dir / "train.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert any(float(r["grad_norm"]) > 0 for r in rows)  # the rule critic gave a learning signal
    before = {n: p.detach() for n, p in initial.named_parameters()}
    after = dict(module.policy.named_parameters())
    assert before.keys() == after.keys()
    lora = [n for n in after if "lora_" in n]
    assert len(lora) == 2 * 7 * 2  # A and B of q/k/v/o/gate/up/down in both layers of the tiny model
    for name, param in after.items():
        if "lora_" in name:
            assert param.requires_grad and not torch.equal(param.detach(), before[name]), name
        else:
            assert not param.requires_grad and torch.equal(param.detach(), before[name]), name
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert len(saved) == len(lora)
    state = {k.replace(".default", ""): v for k, v in module.policy.state_dict().items() if "lora_" in k}
    for key, value in saved.items():
        torch.testing.assert_close(value, state[key])
    from coz.run.checkpoint_files import load_checkpoint_file

    checkpoint = load_checkpoint_file(run_dir / "checkpoints" / "last.safetensors")
    assert all("lora_" in k for k in checkpoint["state_dict"])  # the adapter only, never the base model


def test_the_saved_adapter_loads_in_coz_zoom(trained, photos, compose_zoom, tmp_path):
    from coz.prompts.lora import load_adapter
    from coz.prompts.tiny import build_tiny_vlm
    from coz.zoom.tool import run as zoom

    _, run_dir, _, module = trained
    adapter = run_dir / "adapter"
    # the command the run printed, as a user copies it (was "prompt.adapter=...": refused without prompt=)
    hint = re.search(r"\(use: python -m coz.zoom input=\.\.\. (.+)\)", TRAINED_PRINTED[-1])[1].split()
    assert hint == ["prompt=tiny_vlm", f"prompt.adapter={adapter}"]
    cfg = compose_zoom([f"input={photos / 'astronaut.png'}", "backbone=bicubic", *hint, "zoom.steps=1"])
    record = zoom(cfg, run_dir=tmp_path / "zoom")
    assert record["finished"] == ["astronaut"] and record["images"]["astronaut"]["prompts"][0] is not None
    base, processor = build_tiny_vlm()
    loaded = load_adapter(copy.deepcopy(base), adapter)
    inputs = module.io.encode(
        [module.val_paths and __import__("PIL.Image").Image.new("RGB", (512, 512))],
        [__import__("PIL.Image").Image.new("RGB", (512, 512), "red")],
    )
    with torch.no_grad():
        adapted = loaded(**inputs).logits
        trained_logits = module.policy.eval()(**inputs).logits
        plain = base(**inputs).logits
    torch.testing.assert_close(adapted, trained_logits)
    assert not torch.allclose(adapted, plain)


@pytest.mark.slow
def test_kill_and_resume_continues_exactly(trained, photos, tmp_path, monkeypatch):
    """A process of ``python -m coz.train_grpo`` (forked from this one: tests/inprocess_cli.fork_program)
    gets SIGKILL after its first checkpoint; rerunning
    the same command line into its folder resumes and ends with the adapter and logs of the
    uninterrupted run (``trained``)."""
    overrides = tiny_overrides(photos, *RUN_ARGS)
    folder = tmp_path / "killed"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = fork_program("train_grpo", [*overrides, f"hydra.run.dir={folder}"], REPO)
    deadline = time.time() + 400
    # the checkpoint file itself (Lightning writes it atomically), not adapters/step-000002: that one is
    # written while the checkpoint is being made, and a kill in between leaves nothing to resume from
    first = folder / "checkpoints" / "step_0000002.safetensors"
    while not first.exists() and proc.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert proc.is_alive(), "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not (folder / "adapter").exists()
    assert run_cli(main, [*overrides, f"hydra.run.dir={folder}"], monkeypatch) == 0  # the same command
    assert "resuming from" in (folder / "train_grpo.log").read_text()

    reference = trained[1]
    a = load_file(folder / "adapter" / "adapter_model.safetensors")
    b = load_file(reference / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    for name in ("train.csv", "rewards.csv"):
        steps = [int(r["step"]) for r in read_csv(folder / name)]
        assert steps == sorted(set(steps)) == [int(r["step"]) for r in read_csv(reference / name)], name
    assert [int(r["step"]) for r in read_csv(reference / "rewards.csv")] == [0, 3, 4]


@pytest.mark.slow
def test_smoke_preset_runs_the_whole_loop(tmp_path, monkeypatch, capsys):
    """README's first command, ``python -m coz.train_grpo experiment=smoke``, through its entry point."""
    monkeypatch.chdir(tmp_path)  # writes the sample photos into tmp_path/outputs/samples
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_cli(main, ["experiment=smoke", f"hydra.run.dir={tmp_path}/run"], monkeypatch) == 0
    run_dir = tmp_path / "run"
    assert "coz.train_grpo: 4 step(s); validation total reward" in capsys.readouterr().out
    assert len(list((tmp_path / "outputs" / "samples").iterdir())) == 4
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert [int(r["step"]) for r in read_csv(run_dir / "rewards.csv")] == [0, 2, 4]
    for name in (
        "train.csv",
        "samples.csv",
        "rewards.png",
        "run.json",
        "train_grpo.log",
        "checkpoints/last.safetensors",
    ):
        assert (run_dir / name).exists(), name
    assert any((run_dir / "wandb").glob("offline-run-*"))


def test_the_tiny_policy_learns_a_rule_reward(trained):
    """Rewarding one word (the rule critic): the validation reward of the greedy prompts rises clearly,
    from no validation prompt with the word to every one."""
    rows = read_csv(trained[1] / "rewards.csv")
    assert [int(r["step"]) for r in rows] == [0, 3, 4]
    first, last = rows[0], rows[-1]
    assert float(first["critic"]) == 0.0 and float(last["critic"]) == 1.0
    assert float(last["total"]) > float(first["total"]) + 0.3


def record_advantages(monkeypatch, folder: Path) -> None:
    """Each rank appends, per rollout, every rank's gathered rewards, the advantages computed from them
    and the ones this rank trains with, to folder/rank<r>.jsonl. The smoke critic gives every completion
    the same reward (all advantages 0, so any mix-up would pass): the totals are made distinct per rank,
    step and completion, with a spread that differs per rank so the advantages differ too (what is
    checked is their plumbing, not the rewards)."""
    import dataclasses

    import torch.distributed as dist

    import coz.train_grpo.module as grpo
    import coz.train_grpo.rewards as rewards

    seen = {}
    calls = [0]  # per process: each forked rank counts from 0

    def score(self, texts, answers, _real=rewards.Rewards.score):
        calls[0] += 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        return [
            dataclasses.replace(r, total=float((rank + 1) * (i * i + 1) + 10 * calls[0]))
            for i, r in enumerate(_real(self, texts, answers))
        ]

    def group_advantages(totals, *args, _real=grpo.group_advantages):
        out = _real(totals, *args)
        seen.update(totals=totals.tolist(), advantages=out.tolist())
        return out

    def rollout(self, pairs, timings, _real=grpo.GRPOModule.rollout):
        out = _real(self, pairs, timings)
        record = {**seen, "mine": out["advantages"].tolist(), "rank": int(self.global_rank)}
        with open(folder / f"rank{self.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return out

    monkeypatch.setattr(rewards.Rewards, "score", score)
    monkeypatch.setattr(grpo, "group_advantages", group_advantages)
    monkeypatch.setattr(grpo.GRPOModule, "rollout", rollout)


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_into_one_folder(photos, tmp_path, monkeypatch, capsys):
    """trainer.devices=2 on the CPU: two workers gather their rewards and write one run folder; each
    rank trains with the advantages of its own completions, computed from everyone's rewards. The
    ranks are forked, where coz spawns them; what they would be sent pickles (tests/forked_ranks.py)."""
    recorded = tmp_path / "advantages"
    recorded.mkdir()
    record_advantages(monkeypatch, recorded)
    pickled = fork_the_ranks(monkeypatch)
    folder = tmp_path / "ddp"
    args = ["experiment=smoke", f"input={photos}", "data.write_samples=false", "logger=csv"]
    args += [
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "grpo.steps=2",
        "grpo.scale_rewards=none",  # the mean baseline, which the expected advantages below spell out
        # what the ranks do beyond the gather is kept small: the rule critic (no critic model to build and
        # run; the patch sets the rewards anyway), and one validation, at the end (not also at step 0)
        "critic=keyword",
        "critic.words=[cat]",
        "val.at_start=false",
        f"hydra.run.dir={folder}",
    ]
    assert run_cli(main, args, monkeypatch) == 0
    assert len(pickled) == 1  # one launch; what spawn would send survived a pickle round trip
    assert "coz.train_grpo: 2 step(s)" in capsys.readouterr().out
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert [int(r["step"]) for r in read_csv(folder / "train.csv")] == [1, 2]
    assert [int(r["step"]) for r in read_csv(folder / "rewards.csv")] == [2]  # validated across the ranks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["advantages", "ddp"]  # one run folder

    ranks = [[json.loads(x) for x in (recorded / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # one rollout per step on each rank
    G = int(compose_grpo(["experiment=smoke"]).grpo.generations)
    for step in range(2):
        first, second = ranks[0][step], ranks[1][step]
        assert first["totals"] == second["totals"]  # both gathered the same rewards, from both ranks
        totals = torch.tensor(first["totals"])
        expected = totals - totals.view(-1, G).mean(dim=1).repeat_interleave(G)  # Alg. 2, line 17
        n = len(first["mine"])
        assert len(totals) == 2 * n
        for r, record in enumerate((first, second)):
            torch.testing.assert_close(torch.tensor(record["mine"]), expected[r * n : (r + 1) * n])
        assert expected[:n].tolist() != expected[n:].tolist()  # the ranks' advantages differ: a mix-up shows


def test_the_reward_plot_shows_validation_and_the_trailing_training_mean(tmp_path):
    from coz.train_grpo.logs import plot_rewards, trailing_mean

    assert trailing_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    keys = ("critic", "phrase", "repetition", "total")
    val = [{"step": str(s), **{k: "0.5" for k in keys}} for s in (0, 10, 20)]
    train = [{"step": str(s), **{k: str(s / 20) for k in keys}} for s in range(1, 21)]
    path = plot_rewards(val, tmp_path / "rewards.png", train)
    assert path.stat().st_size > 10_000 and plot_rewards([], tmp_path / "none.png") is None
