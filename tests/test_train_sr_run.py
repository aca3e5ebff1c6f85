"""coz.train_sr end to end on the tiny offline models (CPU): what trains, what stays, resume, export."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from forked_ranks import fork_the_ranks
from hydra import compose, initialize_config_dir
from inprocess_cli import fork_program, run_cli

from coz.run.checkpoint_files import load_checkpoint_file
from coz.run.cli import quote_null_choices, tool_config_dir
from coz.train_sr.tool import build, run

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "experiment=smoke",
    "logger=csv",
    "data.crop=32",
    "data.batch_size=1",
    "log.images_every=0",
    "threads=auto",
    "trainer.accelerator=cpu",
]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir("train_sr"), version_base="1.3"):
        return compose(config_name="train_sr", overrides=quote_null_choices([*TINY, *overrides]))


def metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's CSV logs, resumed parts included, by step."""
    rows = []
    for path in sorted(run_dir.glob("logs*/metrics.csv")):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return sorted(rows, key=lambda r: int(float(r["step"])))


def frozen_and_trained(module) -> tuple[dict, dict]:
    """(every frozen tensor of the backbone, every trained one), cloned."""
    b = module.gen.backbone
    modules = {"transformer": b.transformer, "vae": b.vae}
    modules.update({f"text{i}": m for i, m in enumerate(b.text.modules())})
    frozen = {
        f"{k}.{n}": p.detach().clone()
        for k, m in modules.items()
        for n, p in m.named_parameters()
        if not p.requires_grad
    }
    trained = {k: v.clone() for k, v in module.state_dict().items()}
    return frozen, trained


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """Two steps of tiny SD3, one per stage (Real-ESRGAN, then bicubic): a few seconds, shared by
    three tests that make test-fast keeps."""
    run_dir = tmp_path_factory.mktemp("two_steps")
    cfg = compose_train(
        [
            "stages=[{name: a, degradation: realesrgan, steps: 1}, {name: b, degradation: bicubic, steps: 1}]",
            "optim.lr=1e-2",
        ]
    )
    trainer, module = build(cfg, run_dir)
    module.configure_model()
    before = frozen_and_trained(module)
    trainer.fit(module)
    return run_dir, module, before


def test_two_steps_train_every_lora_tensor_and_nothing_else(two_steps):
    run_dir, module, (frozen, trained) = two_steps
    frozen_after, trained_after = frozen_and_trained(module)
    assert set(frozen) == set(frozen_after) and len(frozen) > 100
    for name, value in frozen.items():
        assert torch.equal(value, frozen_after[name]), f"frozen weight changed: {name}"
    assert any(k.startswith("regulariser/") for k in trained)  # the fake LoRA trains too
    assert any(".lora_" in k and k.startswith("generator/vae.") for k in trained)
    for name, value in trained.items():
        assert not torch.equal(value, trained_after[name]), f"trainable tensor did not change: {name}"


def test_two_steps_log_every_term_and_switch_stage(two_steps):
    run_dir, *_ = two_steps
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert [r["stage"] for r in rows] == ["0.0", "1.0"]  # the switch at the configured step
    for key in ("loss/l2", "loss/dmd", "loss/reg_diffusion", "lr/transformer_lora", "lr/vae_lora",
                "lr/regulariser_lora", "throughput/images_per_s", "data/skipped_files"):  # fmt: skip
        assert rows[-1][key] != "", key
    ckpt = load_checkpoint_file(run_dir / "checkpoints" / "last.safetensors")
    assert ckpt["coz"]["step"] == 2 and ckpt["coz"]["stage"] == 1
    state = ckpt["state_dict"]  # only what trains: generator LoRA and the regulariser's
    assert all(k.startswith("regulariser/") or ".lora_" in k for k in state)
    assert sum(v.numel() for v in state.values()) < 200_000
    assert len(ckpt["optimizer_states"]) == 3  # transformer LoRA, VAE LoRA, regulariser LoRA
    assert "samples" not in str(list((run_dir / "checkpoints").iterdir()))


def test_exported_release_format_loads_in_coz_zoom(two_steps, compose_zoom, photo):
    from coz.backbones import build_backbone
    from coz.geometry import to_tensor

    run_dir, module, _ = two_steps
    export = run_dir / "export"
    x = to_tensor([photo.resize((64, 64))])  # (1, 3, 64, 64) in [0, 1]
    trained = module.gen.backbone
    trained.latent_shift = "test"  # what coz.zoom runs (training used the train path)
    from coz.backbones.diffusion.lora_formats import LoRALinear

    for (
        layer
    ) in trained.transformer.modules():  # nor does coz.zoom round the rank-4 activation (training does)
        if isinstance(layer, LoRALinear):
            layer.fp16_rank = False
    ours = compose_zoom(["backbone=tiny_sd3", f"backbone.weights={export / 'lora.safetensors'}"])
    trained.reseed(int(ours.backbone.seed))  # coz.zoom's seed (training reseeds per step)
    expected = trained.upscale(x, ["a photo"])
    released = compose_zoom(
        [
            "backbone=tiny_sd3",
            f"backbone.transformer_lora={export / 'model.pkl'}",
            f"backbone.vae_encoder={export / 'vae_encoder.pt'}",
        ]
    )
    fresh = build_backbone(compose_zoom(["backbone=tiny_sd3"]).backbone).upscale(x, ["a photo"])
    from_release = build_backbone(released.backbone).upscale(x, ["a photo"])
    from_ours = build_backbone(ours.backbone).upscale(x, ["a photo"])
    assert torch.allclose(from_ours, expected, atol=1e-6)
    assert (from_release - expected).abs().max() < 2e-3  # the release stores the VAE encoder in fp16
    assert (fresh - expected).abs().max() > 1e-2  # the trained weights do change the output


# Four steps, two stages of two, a checkpoint at the stage boundary, two micro-batches per step: the
# uninterrupted run that the kill -9 and the continued run must both end as.
TWO_STAGES = (
    "stages=[{name: a, degradation: realesrgan, steps: 2}, {name: b, degradation: bicubic, steps: %d}]"
)
# threads=1: the killed run is forked (tests/inprocess_cli.fork_program), and every run of the comparison
# computes with the same thread count
ONE_THREAD = [a if a != "threads=auto" else "threads=1" for a in TINY]
ACCUMULATE_2 = [*ONE_THREAD, "checkpoint.every_n_steps=2", "optim.accumulate=2", "val.every_n_steps=0"]
FOUR_STEPS = [*ACCUMULATE_2, TWO_STAGES % 2]
THREE_STEPS = [*ACCUMULATE_2, TWO_STAGES % 1]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shared_run_env):
    """FOUR_STEPS uninterrupted, through the program's entry point (shared by two tests)."""
    from coz.train_sr.tool import main

    run_dir = tmp_path_factory.mktemp("straight") / "straight"
    with pytest.MonkeyPatch.context() as patch:
        assert run_cli(main, [*FOUR_STEPS, f"hydra.run.dir={run_dir}"], patch) == 0
    return run_dir


@pytest.mark.slow
def test_a_finished_run_continues_with_more_steps_logs_into_one_wandb_run_and_checkpoints_follow(
    straight, tmp_path
):
    """A finished run (its last checkpoint from the end of training) continued with a longer stage
    trains exactly the extra step and ends as the longer run, into the same W&B run (validation and
    losses logged once per step); resuming from an older file re-links ``last`` to what it writes;
    resume=none (a fresh run) into a folder with checkpoints is refused."""
    from wandb_records import offline_runs, read_run

    from coz.errors import CozError

    dashboards = ["logger=both", "val.every_n_steps=2"]  # validation and W&B change no weight
    folder = tmp_path / "continued"
    run(compose_train([*THREE_STEPS, *dashboards]), folder)  # step 3 saved by the end of training
    run(compose_train([*FOUR_STEPS, *dashboards]), folder)  # resume=auto: trains on

    a = load_checkpoint_file(straight / "checkpoints" / "step_0000004.safetensors")
    b = load_checkpoint_file(folder / "checkpoints" / "last.safetensors")
    assert a["coz"]["step"] == b["coz"]["step"] == 4
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # each logged step once, the continuation only step 4
    logs = [folder / "logs" / "metrics.csv", folder / "logs-resumed-1" / "metrics.csv"]
    steps = [[r["step"] for r in csv.DictReader(p.open())] for p in logs]
    assert steps == [["1", "2", "3"], ["4"]]
    assert "val/psnr" in logs[0].read_text()
    assert (folder / "images" / "val_0000002.png").exists()
    # W&B: the continuation resumes the same run, validation at steps 2 and 4, one loss row per step
    runs = [read_run(p) for p in offline_runs(folder)]
    assert len(runs) == 2 and runs[0].id == runs[1].id
    assert all((r.job_type, r.name) == ("train_sr", "continued") for r in runs)
    validations = [row for r in runs for row in r.history if "val/psnr" in row]
    assert [row["trainer/global_step"] for row in validations] == [2, 4]
    assert all(isinstance(row["val/psnr"], float) for row in validations)
    pictures = [row for r in runs for row in r.history if "val/lr_sr_hr/_type" in row]
    assert pictures and all(row["val/lr_sr_hr/count"] == 2 for row in pictures)  # val.images=2
    losses = [[row["trainer/global_step"] for row in r.history if "loss/l2" in row] for r in runs]
    assert losses == [[1, 2, 3], [4]]

    with pytest.raises(CozError, match="resume=none: .* already holds checkpoints; use resume=auto"):
        run(compose_train([*FOUR_STEPS, *dashboards, "resume=none"]), folder)
    older = folder / "checkpoints" / "step_0000002.safetensors"
    run(compose_train([*THREE_STEPS, *dashboards, f"resume={older}"]), folder)  # step 3 again, not 4
    last = folder / "checkpoints" / "last.safetensors"
    assert load_checkpoint_file(last)["coz"]["step"] == 3
    assert os.path.samefile(last, folder / "checkpoints" / "step_0000003.safetensors")
    # run.json lists every attempt (the refused resume=none is none of them), oldest first
    attempts = json.loads((folder / "run.json").read_text())["attempts"]
    assert [a["resumed_from"] for a in attempts][::2] == [None, str(older)]
    assert len(attempts) == 3 and attempts[1]["resumed_from"].endswith(".safetensors")


@pytest.mark.slow
def test_overfitting_one_batch_lowers_the_loss(tmp_path, samples):
    from PIL import Image

    small = tmp_path / "small.png"  # a 32-px copy cropped whole, unflipped: the same batch every step
    Image.open(samples[0]).convert("RGB").resize((32, 32)).save(small)
    cfg = compose_train(
        [
            f"data.sources=[{{path: '{small}'}}]",
            "data.hflip=false",
            "stages=[{degradation: bicubic, steps: 15}]",
            "loss.dmd=0",
            "loss.reg_diffusion=0",
            "optim.lr=4e-3",
            "checkpoint.every_n_steps=0",
            "val.every_n_steps=0",
            "prompts.mode=null",
        ]
    )
    run(cfg, tmp_path / "run")
    losses = [float(r["loss/l2"]) for r in metrics(tmp_path / "run")]
    assert len(losses) == 15
    assert sum(losses[-5:]) / 5 < 0.93 * sum(losses[:5]) / 5  # seeded: the same curve every run


@pytest.mark.slow
def test_sd21_trains_and_its_osediff_pkl_loads_in_coz_zoom(tmp_path, compose_zoom, photo):
    from coz.backbones import build_backbone
    from coz.geometry import to_tensor

    cfg = compose_train(
        ["backbone=tiny_sd21", "stages=[{degradation: realesrgan, steps: 1}]", "optim.lr=1e-2"]
    )
    trainer, module = build(cfg, tmp_path)
    trainer.fit(module)
    ckpt = load_checkpoint_file(tmp_path / "checkpoints" / "last.safetensors")
    assert any("conv_in" in k for k in ckpt["state_dict"])  # conv_in trains in full, as OSEDiff
    assert len(ckpt["optimizer_states"]) == 2  # OSEDiff: one AdamW for the generator, one for the fake LoRA
    x = to_tensor([photo.resize((64, 64))])
    zoom = compose_zoom(["backbone=tiny_sd21", f"backbone.osediff_pkl={tmp_path / 'export' / 'osediff.pkl'}"])
    module.gen.backbone.reseed(int(zoom.backbone.seed))
    module.gen.backbone.color_fix = str(zoom.backbone.color_fix)
    expected = module.gen.backbone.upscale(x, [""])
    assert torch.allclose(build_backbone(zoom.backbone).upscale(x, [""]), expected, atol=1e-5)


@pytest.mark.slow
def test_cnn_recipe_fine_tunes_realesrgan_and_zoom_loads_it(tmp_path, compose_zoom, photo):
    from coz.backbones import build_backbone
    from coz.geometry import to_tensor

    cfg = compose_train(
        [
            "experiment=cnn",
            "logger=csv",
            "data.crop=32",
            "stages=[{degradation: realesrgan, steps: 1}]",
            "optim.lr=1e-3",
            "val.every_n_steps=0",  # no validation metrics to build (NIQE's parameters, LPIPS' weights)
        ]
    )
    trainer, module = build(cfg, tmp_path)
    trainer.fit(module)
    weights = tmp_path / "export" / "realesrgan.safetensors"
    x = to_tensor([photo.resize((16, 16))])
    with torch.no_grad():
        expected = module.gen.net.eval()(x).clamp(0, 1)
    zoom = compose_zoom(["backbone=realesrgan", f"backbone.weights={weights}", "backbone.runtime=torch"])
    assert torch.allclose(build_backbone(zoom.backbone).upscale(x), expected, atol=1e-5)
    # BasicSR names in checkpoints too (spandrel's own names stay inside the module), and spandrel's
    # detection loads the export as well
    ckpt = load_checkpoint_file(tmp_path / "checkpoints" / "last.safetensors")
    assert "generator/body.22.rdb3.conv5.weight" in ckpt["state_dict"]
    zoom = compose_zoom(["backbone=spandrel", f"backbone.weights={weights}"])
    assert torch.allclose(build_backbone(zoom.backbone).upscale(x), expected, atol=1e-5)


@pytest.mark.slow
def test_ddp_two_cpu_processes_one_run_folder(tmp_path, monkeypatch):
    """trainer.devices=2 on one node: coz picks DDP in started workers, which train into the one run
    folder, each rank on its own items. The ranks are forked, where coz spawns them; what they would
    be sent pickles (tests/forked_ranks.py)."""
    import coz.train_sr.data as data

    items = tmp_path / "items"
    items.mkdir()
    getitem = data.TrainingImages.__getitem__

    def recording(self, index):  # every item a rank loads, appended to items/rank<r>.txt
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else -1
        with open(items / f"rank{rank}.txt", "a") as f:
            f.write(f"{index}\n")
        return getitem(self, index)

    monkeypatch.setattr(data.TrainingImages, "__getitem__", recording)
    pickled = fork_the_ranks(monkeypatch)
    cfg = compose_train(
        [
            "trainer.devices=2",
            "stages=[{degradation: bicubic, steps: 2}]",
            "checkpoint.every_n_steps=2",
        ]
    )
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    assert len(pickled) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items", "run"]
    assert (run_dir / "checkpoints" / "step_0000002.safetensors").is_file()
    assert (run_dir / "export" / "lora.safetensors").is_file()
    assert [r["step"] for r in metrics(run_dir)] == ["1", "2"]
    # each rank trained on its own items, and together on every item of the 2 steps exactly once
    seen = {p.name: [int(x) for x in p.read_text().split()] for p in items.iterdir()}
    assert sorted(seen) == ["rank0.txt", "rank1.txt"]
    assert not set(seen["rank0.txt"]) & set(seen["rank1.txt"])
    every = seen["rank0.txt"] + seen["rank1.txt"]
    assert sorted(every) == list(range(len(every))) and len(every) >= 4


@pytest.mark.slow
def test_smoke_command_as_in_the_readme(tmp_path, monkeypatch):
    """README's first training command, through the program's entry point (coz.train_sr's main with
    the same command line; the real program run of this file is the kill -9 test's)."""
    from coz.train_sr.tool import main

    run_dir = tmp_path / "smoke"
    assert run_cli(main, ["experiment=smoke", f"hydra.run.dir={run_dir}"], monkeypatch) == 0
    assert (run_dir / "checkpoints" / "last.safetensors").is_file()
    assert (run_dir / "export" / "model.pkl").is_file() and (run_dir / "export" / "vae_encoder.pt").is_file()
    assert list((run_dir / "images").glob("step_*.png")) and list(run_dir.glob("wandb/offline-run-*"))


@pytest.mark.slow
def test_kill_9_and_resume_reproduce_the_uninterrupted_run(straight, tmp_path, monkeypatch):
    """A real kill -9 of ``python -m coz.train_sr`` (a process forked from this one:
    tests/inprocess_cli.fork_program) after its first checkpoint (step 2 of 4, the stage
    boundary, accumulate=2); rerunning the command into the same folder resumes there and ends with
    the weights, both Adam moments and the logged losses of a run that was never interrupted."""
    import signal
    import time

    from coz.run.progress import finished
    from coz.train_sr.tool import main

    args = FOUR_STEPS
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    killed = tmp_path / "killed"
    proc = fork_program("train_sr", [*args, f"hydra.run.dir={killed}"], REPO)
    first = killed / "checkpoints" / "step_0000002.safetensors"
    deadline = time.time() + 300
    while not first.exists() and proc.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert proc.is_alive(), "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not (killed / "export").exists()

    # the rerun (same command, same folder), through the same entry point as the uninterrupted run
    assert run_cli(main, [*args, f"hydra.run.dir={killed}"], monkeypatch) == 0
    bar = [c for c in finished if c.desc == "train_sr"][-1]
    assert (bar.unit, bar.total, bar.initial, bar.n) == ("steps", 4, 2, 4)  # counts on from step 2
    assert "resumed at step 2, stage b" in (killed / "train_sr.log").read_text()

    a = load_checkpoint_file(straight / "checkpoints" / "step_0000004.safetensors")
    b = load_checkpoint_file(killed / "checkpoints" / "step_0000004.safetensors")
    assert a["coz"]["step"] == b["coz"]["step"] == 4 and a["coz"]["stage"] == b["coz"]["stage"] == 1
    assert set(a["state_dict"]) == set(b["state_dict"])
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        assert sa["state"].keys() == sb["state"].keys() and sa["state"]
        for i, state in sa["state"].items():
            assert torch.equal(state["exp_avg"], sb["state"][i]["exp_avg"])
            assert torch.equal(state["exp_avg_sq"], sb["state"][i]["exp_avg_sq"])
    assert [r["step"] for r in metrics(straight)] == ["1", "2", "3", "4"]  # once each (accumulate=2)
    resumed_rows = list(csv.DictReader((killed / "logs-resumed-1" / "metrics.csv").open()))
    assert [r["step"] for r in resumed_rows] == ["3", "4"]  # the rerun logs on from its checkpoint
    losses = [{r["step"]: r["loss/l2"] for r in metrics(folder)} for folder in (straight, killed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
