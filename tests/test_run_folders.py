"""Run folders from the user's side (issue 27): a folder belongs to the tool that made it, is never
writable by others, and the command's exit code says what happened (Ctrl-C, a closed stdout, a sweep).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from inprocess_cli import run_cli, start_program, stop_programs
from PIL import Image

# no model: a zoom in milliseconds
TINY = ["zoom=bicubic", "zoom.steps=1", "zoom.size=64", "save.gif_size=16"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def zoom(args: list[str], monkeypatch) -> int:
    from coz.zoom.tool import main

    return run_cli(main, [*TINY, *args], monkeypatch)


# ---------------------------------------------------------------- a folder belongs to its tool


@pytest.mark.parametrize("tool", ["evaluate", "train_sr"])
def test_another_tool_is_refused_in_a_zoom_run_folder_naming_both(
    tool, photos, tmp_path, monkeypatch, capsys
):
    import importlib

    run_dir = tmp_path / "zoomed"
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0
    before = (run_dir / "run.json").read_bytes()
    capsys.readouterr()

    args = {
        "evaluate": ["method=nn", "metrics=offline", f"input={photos}", "zoom.steps=1"],
        "train_sr": ["experiment=smoke", f"data.sources=[{{path: {photos}, prob: 1}}]"],
    }[tool]
    main = importlib.import_module(f"coz.{tool}.tool").main
    code = run_cli(main, [*args, f"hydra.run.dir={run_dir}"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2, err
    assert errors(err) == [
        f"error: {run_dir} is a coz.zoom run folder: coz.{tool} cannot run in it; choose another hydra.run.dir"
    ]
    assert (run_dir / "run.json").read_bytes() == before  # the zoom run is untouched, still resumable
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0


def test_a_folder_an_older_coz_made_belongs_to_the_tool_its_run_files_name(
    photos, tmp_path, monkeypatch, capsys
):
    """Before .coz-tool existed, a folder's run.json (or split.json, job.json) said whose it was."""
    from coz.train_sr.tool import main as train_sr

    run_dir = tmp_path / "zoomed"
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0
    (run_dir / ".coz-tool").unlink()  # as an older coz left it
    before = (run_dir / "run.json").read_bytes()
    capsys.readouterr()
    args = ["experiment=smoke", f"data.sources=[{{path: {photos}, prob: 1}}]", f"hydra.run.dir={run_dir}"]
    assert run_cli(train_sr, args, monkeypatch) == 2
    assert errors(capsys.readouterr().err) == [
        f"error: {run_dir} is a coz.zoom run folder: coz.train_sr cannot run in it; choose another hydra.run.dir"
    ]
    assert (run_dir / "run.json").read_bytes() == before and not (run_dir / ".coz-tool").exists()
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0  # its own tool resumes
    assert (run_dir / ".coz-tool").read_text() == "zoom\n"

    trained = tmp_path / "trained"  # a train_sr run.json names its tool
    trained.mkdir()
    (trained / "run.json").write_text('{"tool": "coz.train_sr", "config": {}}')
    assert zoom([f"input={photos}", f"hydra.run.dir={trained}"], monkeypatch) == 2
    assert errors(capsys.readouterr().err) == [
        f"error: {trained} is a coz.train_sr run folder: coz.zoom cannot run in it; choose another hydra.run.dir"
    ]


# ---------------------------------------------------------------- a refused run leaves nothing


def test_a_refused_run_leaves_no_outputs_folder_and_keeps_every_earlier_one(tmp_path, monkeypatch, capsys):
    """Hydra makes ``outputs/zoom/<date>/<time>-<id>/`` before coz can check the config: a refusal
    removes it and its parents Hydra made empty, never a folder that holds something, and never the
    parents of a ``hydra.run.dir=`` the user chose."""
    from datetime import datetime

    monkeypatch.chdir(tmp_path)
    assert zoom(["input=/no/such/photo.png"], monkeypatch) == 2
    assert errors(capsys.readouterr().err) == ["error: /no/such/photo.png: no such file or folder"]
    assert list(tmp_path.iterdir()) == []  # a first command typed wrong in a new folder

    earlier = tmp_path / "outputs" / "zoom" / datetime.now().strftime("%Y-%m-%d") / "earlier" / "run.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    assert zoom(["input=/no/such/photo.png"], monkeypatch) == 2
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [
        earlier.relative_to(tmp_path).parents[i] for i in range(3, -1, -1)
    ] + [earlier.relative_to(tmp_path)]

    mine = tmp_path / "mine"
    mine.mkdir()
    assert zoom(["input=/no/such/photo.png", f"hydra.run.dir={mine}/runs/one"], monkeypatch) == 2
    assert [p.name for p in mine.iterdir()] == ["runs"]  # only the run folder itself goes
    assert not any((mine / "runs").iterdir())


@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        ("backbone=sd3", "error: backbone=sd3 needs OSEDiff weights"),
        ("backbone=s3diff", "error: backbone=s3diff needs S3Diff weights"),
        ("prompt=dape", "error: prompt=dape needs prompt.ram_weights=PATH"),
    ],
)
def test_a_missing_model_file_is_refused_before_the_run_folder_is_made(
    option, refusal, photos, tmp_path, monkeypatch, capsys
):
    """The backbones' and prompts' own first checks (weights named and on disk) run in zoom's check,
    before the folder is claimed: they ran as the models loaded, and left a claimed folder behind
    (run.json with finished=None, metrics.csv, zoom.log)."""
    from coz.zoom.tool import main

    monkeypatch.chdir(tmp_path)
    assert run_cli(main, [f"input={photos / 'p0.png'}", "zoom.steps=1", option], monkeypatch) == 2
    assert errors(capsys.readouterr().err)[0].startswith(refusal)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- not writable by others


def test_a_world_writable_run_folder_is_refused_in_one_line(photos, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "shared"
    run_dir.mkdir()
    run_dir.chmod(0o777)
    code = zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 3, err
    assert len(errors(err)) == 1 and errors(err)[0].startswith(
        f"error: {run_dir}: the run folder is writable by every user"
    )
    assert "Traceback" not in err
    assert not (run_dir / "run.json").exists()


def test_a_symlink_planted_in_a_run_folder_is_refused_and_its_target_untouched(
    photos, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run_dir / "run.json").unlink()
    (run_dir / "run.json").symlink_to(victim)
    capsys.readouterr()

    code = zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 3, err
    assert errors(err) == [
        f"error: {run_dir / 'run.json'}: a symbolic link inside the run folder could redirect its writes; "
        "remove it or choose another hydra.run.dir"
    ]
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- exit codes: Ctrl-C, a closed stdout


@pytest.fixture(scope="module")
def programs():
    """:func:`zoom_program`'s fork server: started by the first, stopped after this file's tests."""
    yield
    stop_programs()


def zoom_program(args: list[str], cwd: Path) -> tuple[multiprocessing.Process, Path, Path]:
    """``python -m coz.zoom TINY ARGS`` as a process of its own (forked warm: no seconds of imports),
    its stdout a pipe (``cwd/out``, a fifo: the process waits for its reader), its stderr ``cwd/err``."""
    out, err = cwd / "out", cwd / "err"
    os.mkfifo(out)
    return start_program("zoom", [*TINY, *args], cwd, out, err), out, err


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """Far more images than a run gets through before a signal comes (seconds of work even at
    hundreds of images a second): one small picture under 2000 names (hard links: no disk)."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(1)
    first = folder / "m0000.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(first)
    for i in range(1, 2000):
        os.link(first, folder / f"m{i:04d}.png")
    return folder


def test_ctrl_c_mid_run_says_rerun_to_resume_and_exits_130(programs, many, tmp_path):
    run_dir = tmp_path / "run"
    proc, out, err = zoom_program([f"input={many}", f"hydra.run.dir={run_dir}"], tmp_path)
    with out.open() as stdout:
        assert "image(s) ->" in stdout.readline()  # started: the log line before the first image
        os.kill(proc.pid, signal.SIGINT)  # at once: 2000 images take seconds
        stdout.read()  # to the end (the process may write more before it sees the signal)
    proc.join(timeout=120)
    err = err.read_text()
    assert proc.exitcode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "coz.zoom: interrupted, rerun to resume"
    assert "Traceback" not in err
    assert len(list((run_dir / "images").glob("*/zoom.json"))) < 2000  # it was mid-run


def test_a_closed_stdout_exits_quietly(programs, photos, tmp_path):
    # `coz.zoom ... | head -0`: the reader closes the pipe before the run writes its first line
    proc, out, err = zoom_program([f"input={photos}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    out.open().close()  # opens once the process opened its end: closed before anything is written
    proc.join(timeout=120)
    err = err.read_text()
    assert proc.exitcode == 141, err  # 128 + SIGPIPE, as a shell tool killed by the closed pipe
    assert errors(err) == [] and "Traceback" not in err and "Broken pipe" not in err, err


# ---------------------------------------------------------------- an attempt's config is whole or absent


def test_a_kill_while_an_attempt_config_is_written_leaves_no_half_folder(photos, tmp_path, monkeypatch):
    """The kill-9 contract: every ``.hydra*`` folder holds config, hydra and overrides. A process that
    dies after the first of the three files (simulated: the second write raises) leaves no
    ``.hydra-resumed-N`` behind, and the rerun records a complete one."""
    run_dir = tmp_path / "run"
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0

    real_write = Path.write_text
    written: list[str] = []

    def dies_after_one(self, *args, **kwargs):
        if self.name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            written.append(self.name)
            if len(written) == 2:
                raise KeyboardInterrupt  # stands for SIGKILL between two writes
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", dies_after_one)
    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 130  # interrupted
    monkeypatch.setattr(Path, "write_text", real_write)
    assert written[:2] == ["config.yaml", "hydra.yaml"]  # the simulated death came mid-attempt
    attempts = sorted(p.name for p in run_dir.glob(".hydra*"))
    assert all((run_dir / a / "overrides.yaml").is_file() for a in attempts), attempts

    assert zoom([f"input={photos}", f"hydra.run.dir={run_dir}"], monkeypatch) == 0
    attempts = sorted(p.name for p in run_dir.glob(".hydra*"))
    assert attempts == [".hydra", ".hydra-resumed-1"]
    assert all((run_dir / a / "overrides.yaml").is_file() for a in attempts)
