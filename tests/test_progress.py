"""Progress a user can read: the counts and totals of every tool's bar, plain lines without a TTY."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from coz.run import progress
from coz.run.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _fresh_record(monkeypatch):
    monkeypatch.delenv("COZ_PROGRESS", raising=False)
    progress.finished.clear()


def counted(desc: str) -> list[progress.Counted]:
    return [c for c in progress.finished if c.desc == desc]


def test_without_a_terminal_a_plain_line_every_few_percent_and_at_the_end():
    out = io.StringIO()
    with Progress(40, "zoom", "image-steps", every_percent=25, min_interval_s=0, stream=out) as bar:
        bar.set_postfix("astronaut", loss=0.123456)
        for _ in range(40):
            bar.update()
    lines = out.getvalue().splitlines()
    assert [re.match(r"zoom: (\d+)/40 image-steps \((\d+)%\)", line).groups() for line in lines] == [
        ("10", "25"),
        ("20", "50"),
        ("30", "75"),
        ("40", "100"),
    ]
    assert "image-steps/s" in lines[0] and "left" in lines[0] and "\r" not in out.getvalue()
    assert lines[-1].endswith("[astronaut, loss=0.1235]")
    assert counted("zoom") == [progress.Counted("zoom", "image-steps", 40, 40, 0)]


def test_lines_are_spaced_in_time_but_the_last_one_always_comes():
    out = io.StringIO()
    with Progress(100, "tiles", "tiles", every_percent=1, min_interval_s=3600, stream=out) as bar:
        bar.update(100)
    assert out.getvalue().count("\n") == 1  # the first crossing, then nothing for an hour; no repeat at close
    with Progress(100, "tiles", "tiles", every_percent=50, min_interval_s=3600, stream=out) as bar:
        bar.update(10)
    assert out.getvalue().splitlines()[-1].startswith("tiles: 10/100 tiles (10%)")


def test_a_resumed_count_starts_from_what_was_done():
    out = io.StringIO()
    with Progress(10, "train_sr", "steps", initial=6, min_interval_s=0, stream=out) as bar:
        bar.update(4)
    assert out.getvalue().splitlines()[-1].startswith("train_sr: 10/10 steps (100%)")
    assert counted("train_sr") == [progress.Counted("train_sr", "steps", 10, 10, 6)]


def test_a_terminal_gets_a_bar_and_off_gets_nothing(monkeypatch):
    tty = Terminal()
    with Progress(5, "zoom", "image-steps", stream=tty) as bar:
        bar.update(5)
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()
    monkeypatch.setenv("COZ_PROGRESS", "off")
    quiet = io.StringIO()
    with Progress(5, "zoom", "image-steps", stream=quiet) as bar:
        bar.update(5)
        bar.write("hello")
    assert quiet.getvalue() == ""
    assert counted("zoom")[-1].n == 5  # still counted


def test_zoom_counts_image_steps_and_a_resume_counts_on(compose_zoom, samples, tmp_path):
    from coz.zoom.tool import run

    folder = tmp_path / "in"
    folder.mkdir()
    for path in samples[:3]:
        Image.open(path).convert("RGB").resize((64, 64)).save(folder / path.name)
    overrides = [f"input={folder}", "backbone=bicubic", "zoom.steps=2", "save.gif=false", "save.strip=false"]
    run(compose_zoom(overrides), tmp_path / "run")
    assert counted("zoom") == [progress.Counted("zoom", "image-steps", 6, 6, 0)]
    (tmp_path / "run" / "images" / samples[1].stem / "zoom.json").unlink()  # as if killed before it
    run(compose_zoom(overrides), tmp_path / "run")
    assert counted("zoom")[-1] == progress.Counted("zoom", "image-steps", 6, 6, 4)


def test_zoom_ends_its_bar_before_the_summary(compose_zoom, samples, tmp_path):
    """In a log or a pipe (stdout and stderr in one stream), the bar's last line comes before the
    summary, not after "results in"."""
    import contextlib
    import io

    from coz.zoom.tool import run

    Image.open(samples[0]).convert("RGB").resize((64, 64)).save(tmp_path / "p.png")
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        run(
            compose_zoom([f"input={tmp_path / 'p.png'}", "backbone=bicubic", "zoom.steps=2"]),
            tmp_path / "run",
        )
    lines = both.getvalue().splitlines()
    last_bar = max(i for i, line in enumerate(lines) if line.startswith("zoom: 2/2 image-steps"))
    assert last_bar < next(
        i for i, line in enumerate(lines) if line.startswith("coz.zoom: 1 image(s) zoomed")
    )
    pictures = tmp_path / "run" / "images" / "p"
    assert lines[-1] == f"coz.zoom: e.g. {pictures / 'strip.png'} and {pictures / 'zoom.gif'}"
    # only the pictures written: none named when neither was asked for
    both = io.StringIO()
    overrides = [f"input={tmp_path / 'p.png'}", "backbone=bicubic", "save.strip=false", "save.gif=false"]
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        run(compose_zoom(overrides), tmp_path / "run2")
    assert "coz.zoom: e.g." not in both.getvalue()


def test_full_image_counts_its_tiles_and_estimates_from_the_first(compose_zoom, tmp_path, capsys, caplog):
    from coz.zoom.tool import run

    Image.new("RGB", (300, 200), "tan").save(tmp_path / "wide.png")
    cfg = compose_zoom([f"input={tmp_path / 'wide.png'}", "zoom=full", "backbone=nearest", "save.gif=false"])
    with caplog.at_level("INFO", logger="coz.zoom"):
        run(cfg, tmp_path / "run")
    tiles = counted("SR tiles")
    assert (
        len(tiles) == 1 and tiles[0].n == tiles[0].total == 6
    )  # 128-px tiles, 32 overlap: 3 across 300, 2 down 200
    assert "full-image step: 300x200 -> 1200x800 (1.0 Mpx), 6 tiles" in caplog.text
    assert "SR tiles: the first of 6 tiles took" in capsys.readouterr().err
    assert counted("zoom") == [progress.Counted("zoom", "image-steps", 1, 1, 0)]


def test_sweep_size_counts_preset_params_and_command_line_sweeps():
    from coz.evaluate.tool import sweep_size

    assert sweep_size({"prompt": "null,dape,vlm"}, []) == 3
    assert sweep_size({"prompt": "null,dape,vlm"}, ["-m", "dataset=a,b", "seed=1"]) == 6
    assert sweep_size({"prompt": "null,dape"}, ["prompt=vlm"]) == 1  # the command line wins
    assert sweep_size({}, ["zoom.steps=range(1,5)"]) == 4


def test_evaluate_counts_images_times_scales(niqe_params, samples, tmp_path):
    from hydra import compose, initialize_config_dir

    from coz.evaluate.tool import run
    from coz.run.cli import quote_null_choices, tool_config_dir

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in samples[:3]:
        Image.open(path).convert("RGB").resize((96, 96)).save(folder / path.name)
    overrides = [f"input={folder}", "method=nn", "zoom.steps=2", "metrics=none", "report.strips=0"]
    with initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=quote_null_choices(overrides))
    run(cfg, run_dir=tmp_path / "job")
    bars = [c for c in progress.finished if c.unit == "image-scales"]
    assert len(bars) == 1 and bars[0].total == bars[0].n == 3 * 2
    assert bars[0].desc.startswith("NN Interpolation on ")
