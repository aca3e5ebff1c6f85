"""``python -m coz.zoom`` as users run it: outputs, run.json, resume, bad input, Hydra overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inprocess_cli import run_cli_here
from PIL import Image

from coz.errors import CozError
from coz.run.cli import quote_null_choices
from coz.zoom.tool import run

# no model, 256-px states (the fewest pixels 4 bicubic steps allow): the CLI machinery in a second
FAST = ["zoom=bicubic", "zoom.size=256", "save.gif_size=64"]


def coz_zoom(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m coz.zoom ARGS`` as a program: a fresh interpreter, its own stdout and stderr."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "coz.zoom", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def zoom_here(args: list[str], cwd: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    """The same command line through the same entry point, in this process (a fresh Python's
    imports cost seconds): its exit status and what it wrote."""
    from coz.zoom import main

    return run_cli_here(main, args, cwd, monkeypatch, capfd)


def test_quote_null_choices():
    assert quote_null_choices(["prompt=null"]) == ["prompt='null'"]
    assert quote_null_choices(["prompt=null,dape,vlm"]) == ["prompt='null',dape,vlm"]
    assert quote_null_choices(["prompt=dape", "user_prompt=null", "zoom=nearest"]) == [
        "prompt=dape",
        "user_prompt=null",
        "zoom=nearest",
    ]
    assert quote_null_choices(["prompt=choice(null,dape)"]) == ["prompt=choice(null,dape)"]


def test_prompt_null_is_the_default_and_selectable(compose_zoom):
    assert compose_zoom([]).prompt.name == "null"
    assert compose_zoom(["prompt=null"]).prompt.name == "null"


@pytest.mark.parametrize("mode", ["recursive_multiscale", "recursive", "onestep", "nearest", "bicubic"])
@pytest.mark.parametrize("backbone", ["realesrgan", "nearest", "bicubic"])
def test_every_mode_and_backbone_composes(compose_zoom, mode, backbone):
    cfg = compose_zoom([f"zoom={mode}", f"backbone={backbone}", "input=x.png"])
    assert cfg.zoom.mode == mode and cfg.backbone.name == backbone
    assert (cfg.zoom.steps, cfg.zoom.factor, cfg.zoom.size) == (4, 4, 512)


def test_run_writes_every_output(compose_zoom, samples, tmp_path):
    cfg = compose_zoom(
        [
            "zoom=recursive",
            "backbone=nearest",
            f"input={samples[0].parent}",
            "batch_size=3",
            "zoom.size=64",  # every output all the same, at 64 px (the default 512: 64x the pixels)
            "save.gif_size=64",
        ]
    )
    record = run(cfg, run_dir=tmp_path)
    names = sorted(p.stem for p in samples)
    assert sorted(record["finished"]) == names and record["failed"] == {}
    for name in names:
        folder = tmp_path / "images" / name
        for i in range(5):
            state = Image.open(folder / f"state_{i}.png")
            assert state.size == (64, 64) and state.mode == "RGB"
        for i in range(1, 5):
            assert Image.open(folder / f"input_{i}.png").size == (64, 64)
            assert (folder / f"prompt_{i}.txt").read_text() == ""
        assert Image.open(folder / "strip.png").width > 5 * 64
        gif = Image.open(folder / "zoom.gif")
        assert gif.n_frames > 10 and gif.size == (64, 64)
        info = json.loads((folder / "zoom.json").read_text())
        assert info["scales"] == [1, 4, 16, 64, 256]
    for scale in (1, 4, 16, 64, 256):
        assert sorted(p.stem for p in (tmp_path / "scales" / f"x{scale}").iterdir()) == names
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["config"]["zoom"]["mode"] == "recursive" and saved["seed"] == 42
    assert {"torch", "python", "coz"} <= set(saved["versions"])
    assert {"load_s", "sr_s", "prompt_s", "write_s", "other_s", "total_s"} <= set(saved["timings"])
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 * len(names)


def test_rerun_into_the_same_folder_resumes_and_never_mixes_configs(compose_zoom, samples, tmp_path):
    cfg = compose_zoom([*FAST, f"input={samples[0].parent}"])
    run(cfg, run_dir=tmp_path)
    state = tmp_path / "images" / samples[0].stem / "state_4.png"
    before = state.stat().st_mtime_ns
    (tmp_path / "images" / samples[1].stem / "zoom.json").unlink()  # as if interrupted mid-image
    record = run(cfg, run_dir=tmp_path)
    assert state.stat().st_mtime_ns == before  # finished images are not redone
    # run.json keeps every image, not only those this attempt zoomed
    assert len(record["images"]) == len(samples) and len(record["finished"]) == len(samples)
    with pytest.raises(CozError, match="zoom.steps: 4 before, 2 now"):
        run(compose_zoom([*FAST, f"input={samples[0].parent}", "zoom.steps=2"]), run_dir=tmp_path)


def test_folder_with_bad_files_keeps_good_results_and_exits_nonzero(samples, tmp_path, monkeypatch, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in samples[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image: listed as skipped, with its reason")
    out = tmp_path / "run"
    result = zoom_here([*FAST, f"input={folder}", f"hydra.run.dir={out}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 1, result.stderr
    assert "broken.jpg" in result.stdout and str(out) in result.stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.stem for p in samples[:2])
    failed = json.loads((out / "run.json").read_text())["failed"]
    assert sorted(failed) == [str(folder / "broken.jpg"), str(folder / "notes.txt")]
    assert "not an image file name" in failed[str(folder / "notes.txt")]


def test_cli_from_outside_the_repo_uses_a_new_folder_per_run(samples, tmp_path, monkeypatch, capfd):
    first = zoom_here([*FAST, f"input={samples[0]}"], tmp_path, monkeypatch, capfd)
    second = zoom_here([*FAST, f"input={samples[0]}"], tmp_path, monkeypatch, capfd)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    runs = sorted((tmp_path / "outputs" / "zoom").glob("*/*"))
    assert len(runs) == 2  # same second or not, two runs never share a folder
    for r in runs:
        assert f"results in {r}" in first.stdout + second.stdout
        assert (r / "images" / samples[0].stem / "state_4.png").exists()


def test_sweep_syntax_with_prompt_null(samples, tmp_path, monkeypatch, capfd):
    result = zoom_here(
        [
            "-m",
            "prompt=null",
            "zoom=nearest,bicubic",
            "zoom.steps=1",
            "save.gif=false",
            f"input={samples[0]}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == [
        "0-prompt=null,save.gif=False,zoom.steps=1,zoom=nearest",
        "1-prompt=null,save.gif=False,zoom.steps=1,zoom=bicubic",
    ]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["foo=1"], "foo"),  # unknown key
        (["zoom=zigzag"], "zigzag"),  # unknown option, Hydra lists the available ones
        (["backbone=sd9"], "sd9"),
    ],
)
def test_config_errors_fail_before_any_model_loads(args, expected, tmp_path, samples, monkeypatch, capsys):
    """The command line's own entry point, in this process (a fresh Python costs seconds each)."""
    from coz.zoom.tool import main

    argv = ["coz.zoom", *args, f"input={samples[0]}", f"hydra.run.dir={tmp_path / 'r'}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code != 0
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_input_is_one_clear_line_before_torch_loads(tmp_path, monkeypatch):
    """As a program (a fresh interpreter: whatever its imports print shows too): the whole of stderr
    is the one line, and it comes before torch is imported (seconds the user would wait for it):
    here ``torch`` is a stand-in that leaves a mark and fails. A missing ``input=``
    (test_run_contract.py) goes the same way, in-process."""
    stand_in = tmp_path / "stand-in" / "torch"
    stand_in.mkdir(parents=True)
    mark = tmp_path / "torch-imported"
    (stand_in / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\nraise ImportError('torch')\n")
    path = os.pathsep.join(p for p in (str(stand_in.parent), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    result = coz_zoom(["input=/no/such/photos", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: /no/such/photos: no such file or folder"], result.stderr
    assert not (tmp_path / "r").exists()
    assert not mark.exists()


def test_bad_values_fail_clearly(compose_zoom, samples, tmp_path):
    with pytest.raises(CozError, match="batch_size"):
        run(compose_zoom([*FAST, f"input={samples[0]}", "batch_size=0"]), run_dir=tmp_path / "a")
    with pytest.raises(CozError, match="zoom.steps=0: must be a whole number >= 1"):
        run(compose_zoom([*FAST, f"input={samples[0]}", "zoom.steps=0"]), run_dir=tmp_path / "b")


def test_same_seed_same_files(compose_zoom, samples, tmp_path):
    """With a backbone that draws noise (tiny OSEDiff-SD2.1): the same seed gives the same files,
    another seed other pictures (so the seed really reaches the noise)."""
    base = ["zoom=recursive", "backbone=tiny_sd21", "zoom.steps=1", "zoom.size=64", f"input={samples[0]}"]
    base += ["save.gif_size=64"]
    run(compose_zoom([*base, "seed=5"]), run_dir=tmp_path / "a")
    run(compose_zoom([*base, "seed=5"]), run_dir=tmp_path / "b")
    run(compose_zoom([*base, "seed=6"]), run_dir=tmp_path / "c")
    for f in sorted((tmp_path / "a" / "images").rglob("*.*")):
        if f.suffix in (".png", ".gif", ".txt"):
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f
    state = Path("images") / samples[0].stem / "state_1.png"
    assert (tmp_path / "a" / state).read_bytes() != (tmp_path / "c" / state).read_bytes()


def test_wandb_logger_offline(compose_zoom, samples, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_zoom([*FAST, "zoom.steps=2", f"input={samples[0]}", "logger=wandb"])
    run(cfg, run_dir=tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))


@pytest.mark.slow
def test_realesrgan_zoom_is_deterministic(compose_zoom, samples, tmp_path):
    """Same seed, same device: identical files, with the real pretrained backbone."""
    small = ["zoom.steps=1", "zoom.size=64", "save.gif=false"]  # 16 -> 64 px: the same code, 64x fewer pixels
    cfg = compose_zoom([f"input={samples[1]}", *small])
    assert cfg.backbone.name == "realesrgan" and cfg.zoom.mode == "recursive_multiscale"
    run(cfg, run_dir=tmp_path / "a")
    run(cfg, run_dir=tmp_path / "b")
    name = samples[1].stem
    for f in ("state_1.png", "input_1.png", "strip.png"):
        assert (tmp_path / "a" / "images" / name / f).read_bytes() == (
            tmp_path / "b" / "images" / name / f
        ).read_bytes()
    state = np.asarray(Image.open(tmp_path / "a" / "images" / name / "state_1.png"), dtype=float)
    view = np.asarray(Image.open(tmp_path / "a" / "images" / name / "input_1.png"), dtype=float)
    assert state.shape == (64, 64, 3) and 1.0 < np.abs(state - view).mean() < 30  # SR, not a copy
    # the default CPU runtime (ncnn) and the PyTorch reference give the same state, to one grey level
    run(
        compose_zoom([f"input={samples[1]}", *small, "backbone.runtime=torch"]),
        run_dir=tmp_path / "torch",
    )
    reference = np.asarray(Image.open(tmp_path / "torch" / "images" / name / "state_1.png"), dtype=float)
    assert np.abs(state - reference).max() <= 1


def test_a_failed_write_stops_the_run_and_keeps_earlier_results(compose_zoom, samples, tmp_path, monkeypatch):
    import coz.zoom.outputs

    real_write = coz.zoom.outputs.write_zoom

    def flaky_write(run_dir, name, *args, **kwargs):
        if name == samples[1].stem:
            raise OSError("No space left on device")
        return real_write(run_dir, name, *args, **kwargs)

    monkeypatch.setattr(coz.zoom.outputs, "write_zoom", flaky_write)
    cfg = compose_zoom([*FAST, f"input={samples[0].parent}", "batch_size=1"])
    with pytest.raises(OSError, match="No space"):
        run(cfg, run_dir=tmp_path)
    assert (tmp_path / "images" / samples[0].stem / "zoom.json").exists()  # written before the failure
    assert not (tmp_path / "images" / samples[1].stem / "zoom.json").exists()
    monkeypatch.setattr(coz.zoom.outputs, "write_zoom", real_write)
    record = run(cfg, run_dir=tmp_path)  # the rerun resumes and finishes
    assert len(record["finished"]) == len(samples)
