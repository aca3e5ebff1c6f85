"""The run contract every tool shares (coz.run; README "Runs, resume and exit codes"): one process
per run folder, per-image results as one unit, exact resumes, one-line errors and exit codes."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from inprocess_cli import run_cli, run_cli_here, start_program, stop_programs
from PIL import Image

from coz.errors import CozError
from coz.zoom.tool import run

REPO = Path(__file__).resolve().parent.parent
# no model: the run machinery in a second; 64-px states, two steps
TINY = ["zoom=bicubic", "zoom.steps=2", "zoom.size=64", "save.gif_size=16"]


def zoom_here(args: list[str], cwd: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    """``python -m coz.zoom ARGS`` through the same entry point in this process (a fresh Python's
    imports cost seconds): its exit status and what it wrote. The process-level promises (kill -9,
    runs at once) are checked with real processes here, a fresh interpreter's one-line error in
    test_zoom_cli.py."""
    from coz.zoom import main

    return run_cli_here(main, args, cwd, monkeypatch, capfd)


@pytest.fixture(scope="module")
def programs():
    """:func:`start`'s fork server: started by the first, stopped after this file's tests."""
    yield
    stop_programs()


def start(args: list[str], cwd: Path, name: str) -> multiprocessing.Process:
    """``python -m coz.zoom ARGS`` as a process of its own (forked warm: no seconds of imports); what
    it writes goes to ``cwd/name.out`` and ``cwd/name.err``. Tests using it take ``programs``."""
    return start_program("zoom", args, cwd, cwd / f"{name}.out", cwd / f"{name}.err")


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory) -> Path:
    """Eight small noise images (each zooms in milliseconds)."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def rows(run_dir: Path) -> list[list[str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.reader(f))


def result_files(run_dir: Path) -> dict[str, bytes]:
    """Everything a zoom run produces for its images (not logs or attempt records)."""
    found = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and rel.split("/")[0] in ("images", "scales"):
            found[rel] = path.read_bytes()
    return found


# ---------------------------------------------------------------------------- 1: one process per folder


def hold(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until it is killed."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from coz.run import lock; "
            "lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_folder_held_by_a_live_process_is_refused_and_freed_when_it_dies(
    compose_zoom, tiny_photos, tmp_path
):
    holder = hold(tmp_path)
    try:
        cfg = compose_zoom([*TINY, f"input={tiny_photos}"])
        with pytest.raises(CozError, match=f"in use by another coz run \\(pid {holder.pid}\\)"):
            run(cfg, run_dir=tmp_path)
        assert not (tmp_path / "images").exists() and not (tmp_path / "run.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from coz.run import lock

    record = run(cfg, run_dir=tmp_path)  # the kernel dropped the dead process's lock
    assert len(record["finished"]) == 8
    assert not lock.held(tmp_path)  # and this process let go of it at the end


def test_coz_and_its_lock_work_where_fcntl_does_not_exist(tmp_path):
    """The run lock goes through filelock: ``import coz`` and a run's lock need no fcntl (Windows)."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"  # import fcntl now fails, as on Windows
        "from pathlib import Path; import coz, coz.zoom; from coz.run import lock\n"
        "folder = Path(sys.argv[1]); assert lock.acquire(folder) and lock.held(folder)\n"
        "print((folder / '.coz.lock').read_text().strip()); lock.release(folder)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().isdigit()  # the holder's pid, for the refusal message


def test_runs_started_together_never_mix_in_one_folder(programs, tiny_photos, tmp_path):
    """Three processes started at once into one folder, two with the same config and one with
    another: one wins; a process with the winner's config either waits its turn (refused) or resumes
    the finished run, one with the other config is refused; every image's rows come once, from one
    config (two writers, or two configs, would add rows)."""
    out = tmp_path / "run"
    common = [*TINY, f"input={tiny_photos}", "batch_size=1", f"hydra.run.dir={out}"]
    commands = [common, common, [*common, "zoom.steps=1"]]  # TINY's 2 steps twice, then 1 step
    procs = [start(args, tmp_path, f"p{i}") for i, args in enumerate(commands)]
    for p in procs:
        p.join(timeout=300)
    results = [(p.exitcode, (tmp_path / f"p{i}.err").read_text()) for i, p in enumerate(procs)]
    steps = json.loads((out / "run.json").read_text())["config"]["zoom"]["steps"]  # the winner's
    won = [("zoom.steps=1" in args) == (steps == 1) for args in commands]  # the winner's config?
    same = [result for result, mine in zip(results, won, strict=True) if mine]
    other = [result for result, mine in zip(results, won, strict=True) if not mine]
    assert 0 in [code for code, _ in same], results  # the winner finished
    assert all(code in (0, 2) for code, _ in same), results
    assert [code for code, _ in other] == [2] * len(other), results
    loser = {2: 1, 1: 2}[steps]
    for err in [err for code, err in results if code == 2]:
        # the refusal: the folder is in use, or (the winner done) it holds the winner's other value
        assert "in use by another coz run" in err or f"zoom.steps: {steps} before, {loser} now" in err, err
    table = rows(out)
    assert len(table) == 1 + 8 * steps  # every image's rows exactly once, from one config
    assert {r[1] for r in table[1:]} == {str(i) for i in range(1, steps + 1)}


# ---------------------------------------------------------------------------- 3: one unit per image


def _holds(run_dir: Path, pid: int) -> bool:
    try:
        return (run_dir / ".coz.lock").read_text().strip() == str(pid)
    except OSError:
        return False


@pytest.fixture(scope="module")
def uninterrupted(tiny_photos, tmp_path_factory) -> Path:
    """The reference: one uninterrupted run of the command line (in this process) over the tiny photos."""
    from coz.zoom import main

    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out.parent)
        assert (
            run_cli(main, [*TINY, f"input={tiny_photos}", "batch_size=1", f"hydra.run.dir={out}"], patch) == 0
        )
    return out


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert result_files(run_dir) == result_files(reference)  # file by file, byte by byte
    assert rows(run_dir) == rows(reference)  # row by row
    mine, theirs = (json.loads((d / "run.json").read_text()) for d in (run_dir, reference))
    assert mine["images"] == theirs["images"] and mine["finished"] == theirs["finished"]
    assert not [p for p in run_dir.rglob(".*.tmp*") if p.is_file()]  # no leftovers of killed writes


def test_a_row_lost_between_an_images_files_and_its_row_comes_back(
    compose_zoom, tiny_photos, uninterrupted, tmp_path, monkeypatch
):
    import coz.run.loggers

    real = coz.run.loggers.CsvLogger.log_zoom
    seen = []

    def killed_after_two(self, name, zoom, files):
        if len(seen) == 2:  # the third image's files and zoom.json are written, its rows not
            with self.path.open("a") as f:
                f.write("p2,1,4,")  # and a row cut short
            raise KeyboardInterrupt
        seen.append(name)
        real(self, name, zoom, files)

    monkeypatch.setattr(coz.run.loggers.CsvLogger, "log_zoom", killed_after_two)
    cfg = compose_zoom([*TINY, f"input={tiny_photos}", "batch_size=1"])
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir=tmp_path)
    assert (tmp_path / "images" / "p2" / "zoom.json").exists()
    leftover = tmp_path / "images" / "p3" / ".state_1.k1ll3d_x.tmp.png"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a png")
    monkeypatch.setattr(coz.run.loggers.CsvLogger, "log_zoom", real)
    run(cfg, run_dir=tmp_path)
    assert not leftover.exists()
    assert_same_run(tmp_path, uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(
    programs, tiny_photos, uninterrupted, tmp_path, monkeypatch, capfd
):
    out = tmp_path / "run"
    args = [*TINY, f"input={tiny_photos}", "batch_size=1", f"hydra.run.dir={out}"]
    rng = random.Random(13)
    kills, window = 0, 0.8
    for attempt in range(8):
        proc = start(args, tmp_path, f"attempt{attempt}")
        # wait for this process to claim the folder, then kill it at a random moment
        deadline = time.monotonic() + 120
        while proc.is_alive() and time.monotonic() < deadline and not _holds(out, proc.pid):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, window))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.join()
        if proc.exitcode == 0:  # it finished the run first (a fast machine): again, killing sooner
            shutil.rmtree(out)
            kills, window = 0, window / 2
        elif kills == 2:
            break
    assert kills >= 1
    result = zoom_here(args, tmp_path, monkeypatch, capfd)  # the resume: the same command, here
    assert result.returncode == 0, result.stderr
    assert_same_run(out, uninterrupted)
    # every attempt's Hydra config is kept
    attempts = sorted(p.name for p in out.glob(".hydra*"))
    assert attempts == [".hydra", *(f".hydra-resumed-{n}" for n in range(1, len(attempts)))]
    assert len(attempts) >= 2
    assert all((out / a / "overrides.yaml").is_file() for a in attempts)


# ---------------------------------------------------------------------------- 2, 4, 5: names and limits


def test_output_names_never_collide():
    from coz.run.names import MAX_NAME_BYTES, output_names

    paths = [Path(n) for n in ("a.png", "a.PNG", "a_png.png", "A.jpg", "b.png", "b_png.png")]
    names = output_names(paths)
    assert len({n.lower() for n in names}) == len(paths)  # distinct, even on case-blind disks
    assert names[4] == "b" and names[5] == "b_png"  # a stem without a clash stays as it is
    long = [Path("x" * 250 + ".png"), Path("x" * 250 + ".jpg")]
    assert all(len(n.encode()) <= MAX_NAME_BYTES for n in output_names(long))
    assert len(set(output_names(long))) == 2
    assert output_names(paths) == names  # the same inputs, the same names: resumes find their work


def test_clashing_names_and_a_240_character_name_each_get_their_own_result(
    compose_zoom, tiny_photos, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = (tiny_photos / "p0.png").read_bytes()
    for name in ("a.png", "a.PNG", "a_png.png", "y" * 240 + ".png"):
        (folder / name).write_bytes(pixels)
    out = tmp_path / "run"
    record = run(compose_zoom([*TINY, f"input={folder}", "max_pixels=null"]), run_dir=out)
    assert record["failed"] == {} and len(record["finished"]) == 4
    assert len(list((out / "images").iterdir())) == 4
    sources = sorted(Path(entry["source"]).name for entry in record["images"].values())
    assert sources == sorted(p.name for p in folder.iterdir())
    assert len(rows(out)) == 1 + 4 * 2


# ---------------------------------------------------------------------------- 7: values checked first


@pytest.mark.parametrize(
    "override,message",
    [
        ("zoom.steps=-1", "zoom.steps=-1: must be a whole number >= 1"),
        ("zoom.steps=abc", "zoom.steps=abc: must be a whole number"),
        ("zoom.factor=3", "zoom.factor=3: must divide zoom.size=64"),
        ("zoom.size=0", "zoom.size=0: must be a whole number >= 1"),
        ("alpha=foo", "alpha=foo: must be one of white, drop"),
        ("save.gif_size=0", "save.gif_size=0: must be a whole number >= 16"),
        ("device=foo", "device=foo: must be auto, cpu, cuda or cuda:N"),
        ("seed=abc", "seed=abc: must be a whole number"),
        ("max_pixels=0", "max_pixels=0: must be a whole number >= 1 (or null)"),
        ("batch_size=two", "batch_size=two: must be a whole number"),
    ],
)
def test_a_bad_value_is_one_line_naming_it_before_anything_runs(
    compose_zoom, tiny_photos, tmp_path, override, message
):
    cfg = compose_zoom([*TINY, f"input={tiny_photos}", override])
    with pytest.raises(CozError) as caught:
        run(cfg, run_dir=tmp_path / "run")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()  # refused before the folder is made


def test_a_diffusion_backbones_size_is_checked_before_it_loads(compose_zoom, tiny_photos, tmp_path):
    cfg = compose_zoom(["backbone=sd3", "zoom.size=100", f"input={tiny_photos}"])
    with pytest.raises(CozError, match="zoom.size=100: must be a multiple of 64 with backbone=sd3"):
        run(cfg, run_dir=tmp_path / "run")


def test_a_missing_input_is_exit_2_and_leaves_no_folder(tmp_path, monkeypatch, capfd):
    result = zoom_here([f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert errors(result) == [
        "error: input is missing: give input=IMAGE_OR_FOLDER (a file or a folder of images)"
    ]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- 6: sweeps


def test_a_sweep_runs_every_job_it_can_and_lists_the_failed_ones(tiny_photos, tmp_path, monkeypatch, capfd):
    one = tiny_photos / "p0.png"
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "zoom.steps=1,-1,2", f"input={one}", f"hydra.sweep.dir={sweep}"]
    result = zoom_here(args, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "coz.zoom: 1 of 3 jobs failed:" in result.stderr
    assert "zoom.steps=-1: must be a whole number >= 1" in result.stderr
    assert len(list(sweep.glob("*/images/p0/zoom.json"))) == 2  # jobs 0 and 2 ran


@pytest.mark.slow
def test_a_sweep_under_submitit_lists_its_failed_job_and_fails_as_the_basic_launcher(
    tiny_photos, tmp_path, monkeypatch, capfd
):
    """Under submitit (local here; SLURM runs the same code) each job runs in its own process, so its
    outcome must come back to the launching one (here this process: the jobs are processes of
    their own): a failed job made the sweep exit 0 with no message."""
    one = tiny_photos / "p0.png"
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", *TINY, "zoom.steps=1,-1", f"input={one}"]
    result = zoom_here([*args, f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "coz.zoom: 1 of 2 jobs failed:" in result.stderr
    failed = [line for line in result.stderr.splitlines() if "(exit 2)" in line]
    assert len(failed) == 1 and f"{sweep}/1-" in failed[0], result.stderr  # names job 1's folder
    assert "zoom.steps=-1: must be a whole number >= 1" in failed[0]
    assert len(list(sweep.glob("0-*/images/p0/zoom.json"))) == 1  # job 0 ran


@pytest.mark.slow
def test_a_submitit_job_that_dies_before_reporting_is_one_line_and_exit_3(
    tiny_photos, tmp_path, monkeypatch, capfd
):
    """A job killed outright (out of memory, a node lost): submitit has no result to give back;
    the sweep (launched from this process) says so in one line instead of submitit's traceback."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()  # every submitit job process dies as it starts, as one killed by the OOM killer
    (hooks / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('SUBMITIT_LOCAL_JOB_ID'):\n    os._exit(9)\n"
    )
    args = ["-m", "hydra/launcher=submitit_local", *TINY, f"input={tiny_photos / 'p0.png'}"]
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)  # the job processes submitit starts inherit it
    from submitit.core.core import Job

    # submitit waits 15 s for a result file a slow network disk may not show yet; this disk is local
    monkeypatch.setattr(Job, "_results_timeout_s", 0)
    result = zoom_here([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 3, result.stderr[-3000:]
    assert errors(result) and errors(result)[0].startswith(
        "error: coz.zoom: a sweep job ended without a result"
    )
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- 10: the environment


def test_environment_errors_are_exit_3_naming_the_path(tiny_photos, tmp_path, monkeypatch, capfd):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = zoom_here(
        [*TINY, f"input={tiny_photos}", f"hydra.run.dir={blocked}"], tmp_path, monkeypatch, capfd
    )
    assert result.returncode == 3, result.stderr
    assert len(errors(result)) == 1 and str(blocked) in errors(result)[0]
    assert "Traceback" not in result.stderr

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.json").write_text('{"config": {"inp')
    result = zoom_here(
        [*TINY, f"input={tiny_photos}", f"hydra.run.dir={corrupt}"], tmp_path, monkeypatch, capfd
    )
    assert result.returncode == 3, result.stderr
    assert errors(result)[0].startswith(f"error: {corrupt / 'run.json'}: corrupt run file")


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EACCES"])
def test_a_full_disk_or_read_only_folder_is_exit_3_naming_the_path(
    compose_zoom, tiny_photos, tmp_path, monkeypatch, capsys, code
):
    import errno

    import coz.zoom.outputs
    from coz.run.entry import Jobs, run_job

    def fails(run_dir, name, *args, **kwargs):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(run_dir / "images" / name))

    monkeypatch.setattr(coz.zoom.outputs, "write_zoom", fails)
    jobs = Jobs("zoom")
    run_job(lambda cfg: run(cfg, run_dir=tmp_path), compose_zoom([*TINY, f"input={tiny_photos}"]), jobs)
    assert jobs.exit_code() == 3
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert line == f"error: {tmp_path / 'images' / 'p0'}: {os.strerror(getattr(errno, code))}"


# ---------------------------------------------------------------------------- 12: quoting


def test_a_path_hydra_cannot_parse_is_named_with_how_to_quote_it(tiny_photos, tmp_path, monkeypatch, capfd):
    odd = tmp_path / "a=b it's"
    odd.mkdir()
    (odd / "p.png").write_bytes((tiny_photos / "p0.png").read_bytes())
    result = zoom_here(
        [*TINY, f"input={odd}", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, monkeypatch, capfd
    )
    assert result.returncode == 2
    (line,) = errors(result)
    assert (
        f"cannot read the argument 'input={odd}'" in line or f'cannot read the argument "input={odd}"' in line
    )
    assert "quoted" in line
    result = zoom_here(
        [*TINY, f'input="{odd}"', f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, monkeypatch, capfd
    )
    assert result.returncode == 0, result.stderr  # quoted for Hydra, it works
    assert (tmp_path / "r" / "images" / "p" / "zoom.json").exists()
    # a letter outside ASCII: said so (it was blamed on = , ' ~ [ ] { }, none of which it has)
    result = zoom_here([*TINY, "input=café.png"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert errors(result) == [
        "error: cannot read the argument 'input=café.png': a value with a letter outside ASCII (é) must be "
        """quoted for Hydra, e.g. 'input="café.png"' in a shell (README: Runs, resume and exit codes)"""
    ]


# ---------------------------------------------------------------------------- 8: what a resume may change


def test_a_resume_may_change_what_cannot_change_results(compose_zoom, tiny_photos, tmp_path, monkeypatch):
    first = run(compose_zoom([*TINY, f"input={tiny_photos}", "batch_size=4"]), run_dir=tmp_path / "run")
    monkeypatch.chdir(tiny_photos.parent)
    relative = f"input=./{tiny_photos.name}/"  # the same folder, spelt otherwise
    again = run(
        compose_zoom([*TINY, relative, "batch_size=1", "threads=1", "device=cpu", "logger=none"]),
        run_dir=tmp_path / "run",
    )
    assert again["images"] == first["images"]


def test_a_refused_resume_names_every_differing_key_with_both_values(compose_zoom, tiny_photos, tmp_path):
    run(compose_zoom([*TINY, f"input={tiny_photos}"]), run_dir=tmp_path)
    with pytest.raises(CozError) as caught:
        run(compose_zoom([*TINY, f"input={tiny_photos}", "zoom.steps=1", "alpha=drop"]), run_dir=tmp_path)
    message = str(caught.value)
    assert "alpha: 'white' before, 'drop' now" in message and "zoom.steps: 2 before, 1 now" in message


def test_every_attempt_keeps_its_hydra_config_and_a_refused_one_changes_nothing(
    tiny_photos, tmp_path, monkeypatch, capfd
):
    out = tmp_path / "run"
    args = [*TINY, f"input={tiny_photos / 'p0.png'}", f"hydra.run.dir={out}"]
    assert zoom_here(args, tmp_path, monkeypatch, capfd).returncode == 0
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    refused = zoom_here([*args, "zoom.steps=1"], tmp_path, monkeypatch, capfd)
    assert refused.returncode == 2 and "zoom.steps: 2 before, 1 now" in refused.stderr
    assert (out / ".hydra" / "overrides.yaml").read_text() == overrides
    assert not list(out.glob(".hydra-resumed-*"))
    assert zoom_here([*args, "batch_size=1"], tmp_path, monkeypatch, capfd).returncode == 0
    assert "batch_size=1" in (out / ".hydra-resumed-1" / "overrides.yaml").read_text()
    assert (out / ".hydra" / "overrides.yaml").read_text() == overrides


# ---------------------------------------------------------------------------- 9: weight files


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory) -> dict[str, Path]:
    """Files that are not what they claim: garbage, and a pickle that would run code if unpickled."""
    folder = tmp_path_factory.mktemp("weights")
    garbage = folder / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not weights at all" * 10)
    pth = folder / "evil.pth"
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    pth.write_bytes(pickle.dumps({"params": Evil()}))
    adapter = folder / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{not json")
    return {"garbage": garbage, "pth": pth, "adapter": adapter}


def _one_clean_line(err: CozError, option: str) -> None:
    text = str(err)
    assert text.startswith(option) and "\n" not in text and "weights_only=False" not in text, text


def test_weight_files_that_fail_to_load_are_one_line(bad_weights):
    from coz.backbones.cnn.realesrgan import RealESRGAN
    from coz.prompts.dape import load_ram_state
    from coz.prompts.lora import load_adapter
    from coz.run.checkpoint_files import checkpoint_step

    for path in (bad_weights["garbage"], bad_weights["pth"]):
        with pytest.raises(CozError) as caught:
            RealESRGAN.from_config(weights=str(path))
        _one_clean_line(caught.value, f"backbone.weights={path}: cannot load it")
    with pytest.raises(CozError) as caught:
        load_adapter(None, bad_weights["adapter"])
    _one_clean_line(caught.value, f"prompt.adapter={bad_weights['adapter']}: cannot load it")
    with pytest.raises(CozError) as caught:
        load_ram_state(None, bad_weights["pth"], None)
    _one_clean_line(caught.value, f"prompt.ram_weights={bad_weights['pth']}: cannot load it")
    with pytest.raises(CozError) as caught:
        checkpoint_step(bad_weights["garbage"])
    _one_clean_line(caught.value, f"resume={bad_weights['garbage']}: cannot load it")


def test_bad_backbone_weights_on_the_command_line_are_exit_2(
    bad_weights, tiny_photos, tmp_path, monkeypatch, capfd
):
    args = ["zoom.steps=1", f"backbone.weights={bad_weights['pth']}", f"input={tiny_photos / 'p0.png'}"]
    result = zoom_here([*args, f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = errors(result)
    assert line.startswith(f"error: backbone.weights={bad_weights['pth']}: cannot load it")
    assert "pwned" not in result.stdout


# ---------------------------------------------------------------------------- 11: 16-bit memory


def test_a_16_bit_scan_converts_in_blocks_without_float64_copies_of_the_whole():
    import tracemalloc

    from coz.images import _scale_to_8bit

    rng = np.random.default_rng(1)
    scan = rng.integers(0, 65536, (3000, 4000), dtype=np.uint16)  # 12 MP
    tracemalloc.start()
    image = _scale_to_8bit(scan, "scan.png", "int", [])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * scan.size  # the 8-bit result and one block; whole float64 copies are 8 B/px each
    expected = np.clip(np.rint(scan[:50].astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image)[:50], expected)
    stretched = _scale_to_8bit(np.array([[np.nan, 2.0], [4.0, np.inf]], dtype=np.float32), "f", "float", [])
    assert np.asarray(stretched).tolist() == [[0, 128], [255, 0]]  # NaN and inf as 0, 0..4 stretched


# ---------------------------------------------------------------------------- 13: the small ones


def test_a_symlink_loop_is_listed_as_a_skipped_input(compose_zoom, tiny_photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes((tiny_photos / "p0.png").read_bytes())
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    record = run(compose_zoom([*TINY, f"input={folder}"]), run_dir=tmp_path / "run")
    assert record["finished"] == ["good"]
    assert record["failed"] == {
        str(folder / "gone.png"): f"{folder / 'gone.png'}: broken symbolic link",
        str(
            folder / "loop.png"
        ): f"{folder / 'loop.png'}: symbolic link loop (the link leads back to itself)",
    }


def test_safetensors_outputs_get_the_usual_file_mode(tmp_path):
    import torch
    from safetensors.torch import save_file

    from coz.run.atomic import write_atomic

    old = os.umask(0o022)
    try:
        path = write_atomic(
            tmp_path / "w.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, str(tmp))
        )
        text = write_atomic(tmp_path / "t.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(text.stat().st_mode & 0o777) == "0o644"


def test_train_grpo_without_a_readable_validation_image_is_not_a_success(tmp_path):
    from coz.run.exit_codes import status_of
    from coz.train_grpo.tool import _finish

    record = {"images": {"root": str(tmp_path), "train": 3, "val": 1}}
    _finish(tmp_path, record, time.perf_counter(), 0)
    assert "validation" in record["failed"] and status_of(record) == 1
    assert (
        "none of the 1 validation image(s)"
        in json.loads((tmp_path / "run.json").read_text())["failed"]["validation"]
    )


@pytest.fixture()
def held_folder(tmp_path):
    """A run folder locked by another live process (killed at the end)."""
    folder = tmp_path / "held"
    folder.mkdir()
    holder = hold(folder)
    yield folder
    holder.send_signal(signal.SIGKILL)
    holder.wait()


@pytest.mark.parametrize("tool", ["evaluate", "train_sr", "train_grpo"])
def test_every_tool_refuses_a_folder_another_process_holds(tool, held_folder, tiny_photos):
    import importlib

    from hydra import compose, initialize_config_dir

    from coz.run.cli import quote_null_choices, tool_config_dir

    extra = {
        "evaluate": ["method=nn", f"input={tiny_photos}", "zoom.steps=1"],
        "train_sr": [f"data.sources=[{{path: {tiny_photos}, prob: 1}}]"],
        "train_grpo": [f"input={tiny_photos}"],
    }[tool]
    with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
        cfg = compose(config_name=tool, overrides=quote_null_choices(["experiment=smoke", *extra]))
    with pytest.raises(CozError, match="in use by another coz run"):
        importlib.import_module(f"coz.{tool}.tool").run(cfg, run_dir=held_folder)
    assert sorted(p.name for p in held_folder.iterdir()) == [".coz.lock"]  # nothing written


@pytest.mark.parametrize("tool", ["train_sr", "train_grpo"])
def test_the_training_tools_check_the_shared_keys_the_same_way(tool, tmp_path):
    import importlib

    from hydra import compose, initialize_config_dir

    from coz.run.cli import quote_null_choices, tool_config_dir

    for override, message in (
        ("seed=abc", "seed=abc: must be a whole number"),  # a typed config: not a number at all
        ("seed=-1", "seed=-1: must be a whole number from 0 to 4294967295"),
        ("threads=0", "threads=0"),
    ):
        with initialize_config_dir(config_dir=tool_config_dir(tool), version_base="1.3"):
            cfg = compose(config_name=tool, overrides=quote_null_choices(["experiment=smoke", override]))
        with pytest.raises(CozError, match=message):
            importlib.import_module(f"coz.{tool}.tool").check_config(cfg)
