"""``python -m coz.evaluate``: sweeps write rows and a table, resume, the failure rule, sharding over
processes, Table 6's overlap measure, the HTML report in a real browser, and every preset."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from inprocess_cli import run_cli

from coz.errors import CozError
from coz.evaluate.rows import read_rows
from coz.evaluate.schema import CheckBeforeSweep, typed_config
from coz.evaluate.tool import describe_job, run
from coz.run.cli import quote_null_choices, tool_config_dir
from coz.run.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("table1", "table2", "table3", "table4", "table5", "table6", "offline", "smoke")
# Fast settings: the bicubic "backbone" (no weights), 128-px views (NIQE's cost is per pixel), two
# scales, no plots (matplotlib: a second per report; the tests that read the plots turn them on).
FAST = [
    "backbone=bicubic",
    "metrics=offline",
    "dataset=folder",
    "zoom.size=128",
    "zoom.steps=2",
    "batch_size=2",
    "report.plots=false",
]


def compose_evaluate(overrides: list[str]):
    (cfg,) = compose_each([overrides])
    return cfg


def compose_each(jobs: list[list[str]]) -> list:
    """The config of each command line (one Hydra initialisation for them all: it costs a third)."""
    with initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"):
        return [compose(config_name="evaluate", overrides=quote_null_choices(job)) for job in jobs]


def copy_photos(samples: list[Path], folder: Path, count: int = 3) -> Path:
    """The first ``count`` sample photos (astronaut, chelsea, coffee) in ``folder``."""
    folder.mkdir(parents=True)
    for path in samples[:count]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture()
def photos(samples, tmp_path) -> Path:
    return copy_photos(samples, tmp_path / "photos")


def table(root: Path) -> list[dict]:
    with (root / "table.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def evaluate(folder: Path, root: Path, job: str, *overrides: str) -> dict:
    cfg = compose_evaluate([*FAST, f"input={folder}", *overrides])
    return run(cfg, run_dir=root / job, results_root=root)


@dataclass(frozen=True)
class Sweep:
    photos: Path
    root: Path


@pytest.fixture(scope="module")
def two_cells(samples, tmp_path_factory, shared_run_env) -> Sweep:
    """A two-cell sweep (NN interpolation and CoZ with the null prompt) on three photos, run once for
    the tests that only read it (its rows and aggregate, its plots, HTML report and W&B run) or that
    resume or rerun into it: the second job logs to W&B offline, as ``logger=wandb`` does."""
    tmp = tmp_path_factory.mktemp("two-cells")
    folder = copy_photos(samples, tmp / "photos")
    root = tmp / "sweep"
    evaluate(folder, root, "0-nn", "method=nn")
    shared_run_env.setenv("WANDB_MODE", "offline")
    # the last job rebuilds the sweep's report: its plots are the ones read
    evaluate(folder, root, "1-coz", "method=coz", "prompt=null", "report.plots=true", "logger=wandb")
    return Sweep(folder, root)


def test_two_cell_sweep_writes_rows_and_the_aggregate(two_cells):
    root = two_cells.root
    rows = read_rows(root)
    assert len(rows) == 3 * 2 * 2  # images x scales x methods
    assert {r["method"] for r in rows} == {"NN Interpolation", "CoZ (Null)"}
    aggregate = table(root)
    assert len(aggregate) == 4
    for cell in aggregate:
        mine = [r["niqe"] for r in rows if r["method"] == cell["method"] and r["scale"] == int(cell["scale"])]
        assert float(cell["niqe"]) == pytest.approx(sum(mine) / len(mine), rel=1e-5)
        assert cell["images"] == "3" and cell["failed"] == "0"
    # PSNR where a source holds the ground truth (astronaut, 512 px, at 4x) and nowhere else: the
    # W&B sweep table below gets a number column with gaps
    assert {math.isnan(r["psnr"]) for r in rows} == {True, False}
    assert (root / "table.md").read_text().count("| 16x |") == 2
    assert (root / "report.html").exists() and (root / "plots" / "niqe.png").exists()


class PowerCut(Exception):
    pass


def test_an_interrupted_run_resumes_and_gives_the_same_aggregate(two_cells, tmp_path, monkeypatch):
    """Cut after the first image, then resumed: the table equals the shared sweep's uninterrupted
    CoZ (Null) job on the same photos."""
    from coz.evaluate.metrics import Metrics

    real_score, calls = Metrics.score, []

    def dies_on_the_second_image(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # two scales of the first image, then the "power cut"
            raise PowerCut
        return real_score(self, *args, **kwargs)

    coz = ("method=coz", "prompt=null", "batch_size=1")
    monkeypatch.setattr(Metrics, "score", dies_on_the_second_image)
    with pytest.raises(PowerCut):
        evaluate(two_cells.photos, tmp_path / "cut", "job", *coz)
    assert {r["image"] for r in read_rows(tmp_path / "cut")} == {"astronaut"}

    scored = []
    monkeypatch.setattr(Metrics, "score", lambda self, *a, **k: scored.append(1) or real_score(self, *a, **k))
    evaluate(two_cells.photos, tmp_path / "cut", "job", *coz)
    assert len(scored) == 2 * 2  # only the two unfinished images, two scales each
    clean = [cell for cell in table(two_cells.root) if cell["method"] == "CoZ (Null)"]
    assert len(clean) == 2 and table(tmp_path / "cut") == clean


def test_a_rerun_with_another_config_is_refused(two_cells):
    """Into the shared sweep's finished NN job: the refusal comes before anything is written."""
    before = table(two_cells.root)
    with pytest.raises(CozError, match="another config \\(seed: 42 before, 1 now\\)"):
        evaluate(two_cells.photos, two_cells.root, "0-nn", "method=nn", "seed=1")
    assert table(two_cells.root) == before


def test_a_failed_image_scores_the_worst_values_and_is_counted(niqe_params, samples, tmp_path):
    photos = copy_photos(samples, tmp_path / "photos", count=1)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    evaluate(photos, tmp_path, "job", "method=nn")
    broken = [r for r in read_rows(tmp_path) if r["image"] == "broken"]
    assert len(broken) == 2 and all(r["failed"] == 1 for r in broken)  # 1: the input is unreadable
    assert all(r["niqe"] == 100.0 and r["piqe"] == 100.0 for r in broken)
    assert all(math.isnan(r["ssim"]) for r in broken)  # full-reference: no ground truth to fail against
    assert "broken.png" in broken[0]["error"]
    for cell in table(tmp_path):
        assert cell["images"] == "2" and cell["failed"] == "1"
        assert float(cell["niqe"]) > 50  # the 100 of the failed image is in the mean, as in the paper


def test_a_failed_zoom_is_retried_by_a_rerun(niqe_params, samples, tmp_path, monkeypatch):
    from coz.evaluate.module import EvaluationModule

    photos = copy_photos(samples, tmp_path / "photos", count=2)  # astronaut, chelsea: one batch
    real_zoom = EvaluationModule._zoom

    def flaky(self, x0s, names):
        if "chelsea" in names:
            raise RuntimeError("CUDA error: an illegal memory access")
        return real_zoom(self, x0s, names)

    monkeypatch.setattr(EvaluationModule, "_zoom", flaky)
    evaluate(photos, tmp_path, "job", "method=nn")
    chelsea = [r for r in read_rows(tmp_path) if r["image"] == "chelsea"]
    assert chelsea and all(r["failed"] == 2 and r["niqe"] == 100.0 for r in chelsea)
    assert {r["image"] for r in read_rows(tmp_path) if not r["failed"]} == {"astronaut"}
    assert {c["failed"] for c in table(tmp_path)} == {"1"}

    monkeypatch.setattr(EvaluationModule, "_zoom", real_zoom)
    evaluate(photos, tmp_path, "job", "method=nn")
    chelsea = [r for r in read_rows(tmp_path) if r["image"] == "chelsea"]
    assert len(chelsea) == 2 and all(r["failed"] == 0 and r["niqe"] < 100 for r in chelsea)
    assert {c["failed"] for c in table(tmp_path)} == {"0"}


def test_jobs_with_the_same_label_and_other_settings_stay_apart(samples, tmp_path):
    photos = copy_photos(samples, tmp_path / "photos", count=1)
    one = ("method=nn", "metrics=none", "zoom.steps=1")  # only the labels are read
    evaluate(photos, tmp_path, "0-seed=1", *one, "seed=1")
    evaluate(photos, tmp_path, "1-seed=2", *one, "seed=2")
    methods = {c["method"] for c in table(tmp_path)}
    assert methods == {"NN Interpolation [0-seed=1]", "NN Interpolation [1-seed=2]"}


def test_a_row_cut_short_by_a_crash_is_dropped(tmp_path):
    from coz.evaluate.rows import BASE_FIELDS, RowWriter

    fields = [*BASE_FIELDS, "niqe"]
    writer = RowWriter(tmp_path / "job" / "rows" / "0-0.csv", fields)
    row = {"dataset": "d", "method": "m", "image": "a", "scale": 4, "failed": 0, "niqe": 5.25}
    writer.append([row])
    with writer.path.open("a") as f:
        f.write("d,m,b,4,,,,0,0,,,,,,5.2")  # the power went at "5.25"
    assert [r["image"] for r in read_rows(tmp_path)] == ["a"]
    RowWriter(writer.path, fields).append([{**row, "image": "b"}])
    rows = read_rows(tmp_path)
    assert sorted(r["image"] for r in rows) == ["a", "b"] and all(r["niqe"] == 5.25 for r in rows)


def test_two_processes_score_every_image_exactly_once(photos, tmp_path):
    """Three photos (one process gets two), both scales, no metrics (the rows say who zoomed what).
    The two processes are forked (``ddp_fork``): the sharding is the module's own, the same under
    every strategy, and a spawned worker would spend ~10 CPU-s importing Lightning again. What
    spawning (the default, ``ddp_spawn``) adds is pickling the module for the workers: checked here."""
    import pickle

    from coz.evaluate.module import EvaluationModule

    two = ("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_fork")
    evaluate(photos, tmp_path, "job", "method=nn", "metrics=none", *two)
    files = sorted((tmp_path / "job" / "rows").glob("*.csv"))
    assert [f.name for f in files] == ["0-0.csv", "0-1.csv"]
    per_file = []
    for f in files:
        with f.open(newline="") as handle:
            per_file.append({(r["image"], r["scale"]) for r in csv.DictReader(handle)})
    assert per_file[0] and per_file[1] and not per_file[0] & per_file[1]
    assert {image for image, _ in per_file[0] | per_file[1]} == {"astronaut", "chelsea", "coffee"}
    assert len(per_file[0]) + len(per_file[1]) == 3 * 2

    cfg = typed_config(compose_evaluate([*FAST, f"input={photos}", "method=nn"]))
    module = EvaluationModule(cfg, tmp_path / "job", [], {"method": "NN Interpolation", "dataset": "photos"})
    assert pickle.loads(pickle.dumps(module)).cfg == cfg


def test_wandb_logs_tables_charts_and_images_offline(two_cells):
    runs = list((two_cells.root / "1-coz" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {
        str(p.relative_to(runs[0] / "files" / "media")) for p in (runs[0] / "files" / "media").rglob("*.*")
    }
    prefixes = (
        "table/rows_",
        "table/sweep/table_",
        "images/sweep/plots/niqe_",
        "images/strips/00000-astronaut_",
    )
    for prefix in prefixes:
        assert any(m.startswith(prefix) for m in media), (prefix, media)


def test_ctrl_c_inside_lightnings_loop_exits_130_with_the_rerun_hint(photos, tmp_path, monkeypatch, capsys):
    """Lightning turns Ctrl-C into sys.exit(1), and 1 means "done, some inputs skipped": it exited 1
    with no message. Now the contract's 130 and "interrupted, rerun to resume", as coz.zoom does (the
    trainers' loops go through the same coz.run.trainer.ctrl_c_stays_an_interrupt)."""
    import signal

    from coz.evaluate import main
    from coz.evaluate.module import EvaluationModule

    def ctrl_c(self, batch, batch_idx=0):
        raise KeyboardInterrupt

    monkeypatch.setattr(EvaluationModule, "predict_step", ctrl_c)
    status = run_cli(
        main, [*FAST, f"input={photos}", "method=nn", f"hydra.run.dir={tmp_path}/r"], monkeypatch
    )
    assert status == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "coz.evaluate: interrupted, rerun to resume"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning had ignored Ctrl-C


def test_shards_split_a_dataset_between_jobs(photos, tmp_path):
    for index in (0, 1):
        shard = (f"shard.index={index}", "shard.count=2")
        evaluate(photos, tmp_path, f"shard{index}", "method=nn", "metrics=none", "zoom.steps=1", *shard)
    rows = read_rows(tmp_path)
    assert sorted(r["image"] for r in rows) == ["astronaut", "chelsea", "coffee"]  # each exactly once


def test_overlapping_halves_of_neighbouring_zooms_agree(samples, tmp_path):
    photos = copy_photos(samples, tmp_path / "photos", count=1)
    evaluate(photos, tmp_path, "job", "method=nn", "metrics=none", "task=overlap")
    rows = read_rows(tmp_path)
    assert rows and all(r["overlap_cos"] == pytest.approx(1.0, abs=1e-9) for r in rows)
    assert all(r["nonoverlap_cos"] < 0.999 for r in rows)
    header = (tmp_path / "table.md").read_text()
    assert "overlap_cos_mean" in header and "overlap_cos_min" in header


def test_runtime_table_records_per_scale_seconds(samples, tmp_path):
    photos = copy_photos(samples, tmp_path / "photos", count=1)
    evaluate(photos, tmp_path, "job", "method=coz", "prompt=null", "metrics=none", "table=table3")
    rows = read_rows(tmp_path)
    by_scale = {s: [r["sr_s"] for r in rows if r["scale"] == s] for s in (4, 16)}
    assert all(t > 0 for ts in by_scale.values() for t in ts)
    assert sum(by_scale[16]) > sum(by_scale[4])  # the chain's 16x includes the 4x step
    assert "SR s" in (tmp_path / "table.md").read_text()


def chromium() -> str | None:
    return (
        shutil.which("chromium-headless-shell")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.mark.skipif(
    chromium() is None,
    reason="needs a headless Chromium (apt-get install chromium-headless-shell; .ci/run installs it)",
)
def test_html_report_renders_in_headless_chromium(two_cells, tmp_path):
    url = (two_cells.root / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert 'data-images-loaded="' in dom.stdout, dom.stderr[-500:]
    loaded = int(dom.stdout.split('data-images-loaded="')[1].split('"')[0])
    total = int(dom.stdout.split('data-images-total="')[1].split('"')[0])
    assert total >= 2 + 4 and loaded == total  # plots and zoom strips, every one decoded
    assert (
        dom.stdout.count("<table>") == 1 and "CoZ (Null)" in dom.stdout and "NN Interpolation" in dom.stdout
    )

    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium(), *flags, f"--screenshot={shot}", "--window-size=1280,3000", url],
        capture_output=True,
        timeout=120,
    )
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 40).mean()  # photos and plot lines, not text
    assert colourful > 0.02, "the screenshot shows no pictures"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_and_every_job_of_its_sweep_composes(preset):
    """Each job exactly as Hydra's sweeper builds it: the preset plus one value of every swept key,
    typed as coz.evaluate types it (the tables' null and DAPE jobs failed on the VLM keys the
    preset sets for the whole sweep: prompt.clean, prompt.max_new_tokens, prompt.adapter)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from coz.evaluate.tool import TOOL
    from coz.run.schema import typed

    with initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params or {})
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    choices = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    jobs = list(itertools.product(*choices)) or [()]
    adapter = ["prompt.adapter=adapter/"] if preset.startswith("table") else []  # as users pass it
    # the table presets: each dataset from COZ_DATA
    folder = ["input=photos/"] if preset in ("offline", "smoke") else []
    labels = set()
    for job_cfg in compose_each([[f"experiment={preset}", *adapter, *folder, *job] for job in jobs]):
        job_cfg = typed(TOOL.schema, TOOL.before_typing(job_cfg))  # as coz.run.handle.execute does
        described = describe_job(job_cfg)
        assert job_cfg.table.startswith("table")
        if described["prompt_mode"] in ("vlm", "vlm_ar1"):  # the preset's release settings reach the VLM
            assert job_cfg.prompt.clean is False and job_cfg.prompt.adapter == "adapter/"
        labels.add((described["dataset"], described["method"]))
    assert len(labels) == len(jobs)  # every job is its own cell of the table
    if preset == "table2":
        assert {m for _, m in labels} == {"S3Diff", "S3Diff + CoZ"}


def test_the_mission_sweep_names_the_papers_methods():
    jobs = [[f"prompt={p}"] for p in ("null", "dape", "vlm")] + [["method=direct_dape"], ["method=nn"]]
    jobs.append(["experiment=table2", "method=coz_vlm", "prompt.adapter=adapter/"])
    labels = [describe_job(cfg)["method"] for cfg in compose_each(jobs)]
    assert labels == [
        "CoZ (Null)",
        "CoZ (DAPE)",
        "CoZ (VLM)",
        "Direct SR",
        "NN Interpolation",
        "S3Diff + CoZ",
    ]


def test_table5_refuses_to_run_without_its_adapter():
    with pytest.raises(CozError, match="prompt.adapter"):
        describe_job(compose_evaluate(["experiment=table5", "method=coz_vlm"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["shard.index=2"], "shard.index=2: must be below shard.count=1"),
        (["shard.count=0"], "shard.count=0: must be a whole number >= 1"),
        (["dataset.limit=0"], "dataset.limit=0: must be a whole number >= 1 (or null)"),
        (["task=tables"], "task=tables: must be one of metrics, overlap"),
        (["zoom=full"], "zoom=full: evaluate scores the zoom chain"),
        (["+metrics.worst.niqe=bad"], "metrics.worst.niqe=bad: must be a number"),
        (["trainer.accelerator=fast"], "trainer.accelerator=fast: must be one of auto, cpu, gpu"),
        (["trainer.devices=two"], "trainer.devices=two: must be a whole number >= 1 or auto"),
        (["trainer.devices=0"], "trainer.devices=0: must be a whole number >= 1 or auto"),
        (["trainer.num_nodes=1.5"], "trainer.num_nodes=1.5: must be a whole number >= 1"),
        (["trainer.strategy=[1,2]"], "trainer.strategy=[1, 2]: must be a Lightning strategy name"),
        (["~trainer.devices"], "trainer.devices: missing; it must be a whole number >= 1 or auto"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_anything_runs(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as refused:
        run(compose_evaluate([*FAST, *overrides]), run_dir=tmp_path / "job")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert not (tmp_path / "job").exists()


def test_trainer_keys_coz_does_not_read_reach_lightning_untyped():
    cfg = typed_config(
        compose_evaluate(["+trainer.max_time=00:02:00:00", "+trainer.limit_predict_batches=0.5"])
    )
    assert cfg.trainer.max_time == "00:02:00:00" and cfg.trainer.limit_predict_batches == 0.5


def test_a_sweep_is_refused_once_before_it_writes_its_folder(tmp_path, capsys):
    """What Hydra hands the callback: the sweep's config, ``hydra`` node included."""
    with initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=["experiment=smoke", "shard.count=abc", f"hydra.sweep.dir={tmp_path}/s"],
            return_hydra_config=True,
        )
    callbacks = [instantiate(c) for c in cfg.hydra.callbacks.values()]
    callback = callbacks[0]  # first: before any other callback touches the sweep folder
    assert isinstance(callback, CheckBeforeSweep)
    with pytest.raises(SystemExit) as stopped:
        callback.on_multirun_start(config=cfg)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: shard.count=abc: must be a whole number >= 1\n"
    callback.on_multirun_start(config=compose_evaluate(["experiment=smoke"]))  # a good sweep goes on
    # a preset is a sweep: hydra.run.dir= alone was ignored (each rerun a new sweep folder, no resume)
    with initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"):
        aimed = compose(
            config_name="evaluate",
            overrides=["experiment=smoke", f"hydra.run.dir={tmp_path}/mine"],
            return_hydra_config=True,
        )
    with pytest.raises(SystemExit) as stopped:
        callback.on_multirun_start(config=aimed)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: hydra.run.dir={tmp_path}/mine: this is a sweep")


# A fresh interpreter that writes which heavy packages it had imported when the program ended.
HEAVY_PACKAGES = {"lightning", "torchmetrics", "torchvision", "transformers", "pyiqa", "wandb"}
REPORT_IMPORTS = f"""
import json, runpy, sys
report, sys.argv = sys.argv[1], ["coz.evaluate", *sys.argv[2:]]
try:
    runpy.run_module("coz.evaluate", run_name="__main__")
finally:
    with open(report, "w") as f:
        json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & {HEAVY_PACKAGES!r}), f)
"""


def test_the_mission_command_fails_in_one_line_without_the_dataset(tmp_path):
    """The one program run of coz.evaluate here: a sweep whose every job is refused, each in one line
    and before Lightning or the metrics are imported (so a user's mistake costs seconds), leaves no
    folder behind (its sweep folder would hold only Hydra's multirun.yaml and the jobs' outcomes)."""
    report = tmp_path / "imported.json"
    result = subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTS, str(report), "-m", "prompt=null,dape,vlm"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    error = {line for line in result.stderr.splitlines() if line.startswith("error:")}
    assert len(error) == 1  # every job of the sweep ran and failed in the same one line
    assert "dataset DIV2K" in min(error) and "dataset.root=" in min(error)
    assert "coz.evaluate: 3 of 3 jobs failed:" in result.stderr
    assert json.loads(report.read_text()) == []
    assert list(tmp_path.iterdir()) == [report]  # no outputs/evaluate-sweep/<date>/<time>/


@pytest.mark.slow
def test_smoke_preset_runs_the_whole_evaluation(niqe_params, tmp_path, monkeypatch, capsys):
    """The README's first check, ``python -m coz.evaluate experiment=smoke``, through the same entry
    point in this process (the program run is the mission command's test above: a fresh interpreter
    paid ~11 s of CPU importing Lightning again). From a fresh folder, as a user's first run: the
    preset writes the sample photos into it. Its models, photos, scales and methods as they are; the
    views at 128 px instead of 256 and no plots (a quarter of the pixels to zoom, prompt and score:
    every step of the path is the same; the two-cell sweep above checks the plots)."""
    from coz.evaluate import main

    monkeypatch.chdir(tmp_path)
    args = ["experiment=smoke", "zoom.size=128", "report.plots=false", f"hydra.sweep.dir={tmp_path}/s"]
    status = run_cli(main, args, monkeypatch)
    assert status == 0, capsys.readouterr().err[-2000:]
    assert "report:" in capsys.readouterr().out
    rows = read_rows(tmp_path / "s")
    assert {r["method"] for r in rows} == {"NN Interpolation", "Direct SR", "CoZ (tiny VLM)"}
    assert len(rows) == 3 * 2 * 2  # methods x the preset's two photos x its two scales
    assert all(not math.isnan(r["niqe"]) for r in rows)
    assert (tmp_path / "s" / "report.html").exists()


def test_a_folder_without_a_preset_is_named_by_its_folder_and_compared_with_nothing(niqe_params, tmp_path):
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(photos / "a.png")
    # no dataset=: the default preset is DIV2K, but input=FOLDER is not DIV2K
    cfg = compose_evaluate(
        [
            "backbone=bicubic",
            "metrics=offline",
            "zoom.size=128",
            "zoom.steps=1",
            "method=nn",
            f"input={photos}",
        ]
    )
    run(cfg, run_dir=tmp_path / "job", results_root=tmp_path)
    assert {r["dataset"] for r in read_rows(tmp_path)} == {"photos"}
    rows = table(tmp_path)
    assert {r["dataset"] for r in rows} == {"photos"}
    assert [r["method"] for r in rows] == ["NN Interpolation"]  # no paper rows beside it
    assert "paper" not in (tmp_path / "table.md").read_text().lower()
