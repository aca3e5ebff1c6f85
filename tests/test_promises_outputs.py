"""The run folder's promises, checked from the outside (README, "What a run writes"):

- every file is written atomically: a write that fails halfway leaves the earlier file intact;
- an image counts as done only once its ``zoom.json`` exists, and ``zoom.json`` is written last.

The failures are injected at the lowest level the writers use (``Path.write_text``, PIL's
``Image.save``), which first put half of the new bytes into the file they were given and then
fail, as a full disk or a killed process would. Whatever file that was, the target must still
hold its old bytes: a writer that writes in place is caught, whichever helper it goes through.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from omegaconf import OmegaConf
from PIL import Image

from coz.chain import Step, Zoom
from coz.run.runinfo import write_run_json
from coz.viz import save_png
from coz.zoom.outputs import is_finished, write_zoom

OLD = "the earlier file, intact\n"
SAVE = OmegaConf.create({"per_scale": True, "strip": True, "gif": True, "gif_size": 64})


class DiskFull(OSError):
    pass


def tiny_zoom(colour: str = "red") -> Zoom:
    """Two 64-px states with a view and a prompt: every kind of file write_zoom writes."""
    x0 = Image.new("RGB", (64, 64), colour)
    step = Step(scale=4, state=Image.new("RGB", (64, 64), "blue"), view=x0.copy(), prompt="a red square")
    return Zoom(x0=x0, steps=[step])


@pytest.fixture()
def half_written_text(monkeypatch):
    """Path.write_text fails halfway for texts for which ``fails(text)`` is true."""
    real = pathlib.Path.write_text
    rule = {"fails": lambda text: False}

    def write_text(self, data, *args, **kwargs):
        if rule["fails"](data):
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise DiskFull(f"disk full while writing {self}")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    return rule


@pytest.fixture()
def half_written_png(monkeypatch):
    """Image.save fails halfway (half of a PNG's bytes land in the file) for the n-th save and later."""
    real = Image.Image.save
    rule = {"from_call": 10**9, "calls": 0}

    def save(self, fp, format=None, **params):
        rule["calls"] += 1
        if rule["calls"] >= rule["from_call"]:
            import io

            buffer = io.BytesIO()
            real(self, buffer, format="PNG")
            pathlib.Path(fp).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise DiskFull(f"disk full while writing {fp}")
        return real(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)
    return rule


def files_in(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- atomic writes
def test_a_failed_zoom_json_write_leaves_the_earlier_one(tmp_path, half_written_text):
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "zoom.json").write_text(OLD)
    half_written_text["fails"] = lambda text: text.startswith("{")  # only the JSON record
    with pytest.raises(DiskFull):
        write_zoom(tmp_path, "cat", tiny_zoom(), SAVE, factor=4, notes=[])
    assert (folder / "zoom.json").read_text() == OLD
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_failed_prompt_write_leaves_the_earlier_prompt(tmp_path, half_written_text):
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "prompt_1.txt").write_text(OLD)
    half_written_text["fails"] = lambda text: text == "a red square"
    with pytest.raises(DiskFull):
        write_zoom(tmp_path, "cat", tiny_zoom(), SAVE, factor=4, notes=[])
    assert (folder / "prompt_1.txt").read_text() == OLD
    assert not (folder / "zoom.json").exists()


def test_a_failed_run_json_write_leaves_the_earlier_one(tmp_path, half_written_text):
    (tmp_path / "run.json").write_text(OLD)
    half_written_text["fails"] = lambda text: True
    with pytest.raises(DiskFull):
        write_run_json(tmp_path, {"images": {"cat": {"prompts": ["x" * 1000]}}})
    assert (tmp_path / "run.json").read_text() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
    half_written_text["fails"] = lambda text: False
    write_run_json(tmp_path, {"seed": 1})
    assert json.loads((tmp_path / "run.json").read_text()) == {"seed": 1}


def test_a_failed_png_write_leaves_the_earlier_picture(tmp_path, half_written_png):
    target = tmp_path / "state_0.png"
    Image.new("RGB", (8, 8), "green").save(target)
    before = target.read_bytes()
    half_written_png["from_call"] = half_written_png["calls"] + 1
    with pytest.raises(DiskFull):
        save_png(Image.new("RGB", (32, 32), "red"), target)
    assert target.read_bytes() == before
    assert Image.open(target).getpixel((0, 0)) == (0, 128, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["state_0.png"]


# ---------------------------------------------------------------------------------- zoom.json last
def count_png_saves() -> int:
    """How many pictures write_zoom encodes for tiny_zoom() (states, view, strip, GIF)."""
    calls = {"n": 0}
    real = Image.Image.save

    def save(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    import tempfile

    Image.Image.save = save
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_zoom(pathlib.Path(tmp), "probe", tiny_zoom(), SAVE, factor=4, notes=[])
    finally:
        Image.Image.save = real
    return calls["n"]


@pytest.mark.parametrize("crash_at", ["first", "last"])
def test_a_crash_while_writing_pictures_leaves_the_image_not_done(tmp_path, half_written_png, crash_at):
    """A crash at the first or at the last picture (the GIF): no zoom.json, so the image is redone."""
    pictures = count_png_saves()
    assert pictures >= 4  # state_0, state_1, input_1, strip (+ the GIF's frames)
    start = half_written_png["calls"]
    half_written_png["from_call"] = start + (1 if crash_at == "first" else pictures)
    with pytest.raises(DiskFull):
        write_zoom(tmp_path, "cat", tiny_zoom(), SAVE, factor=4, notes=[])
    assert not (tmp_path / "images" / "cat" / "zoom.json").exists()
    assert not is_finished(tmp_path, "cat")


def test_zoom_json_is_the_last_file_written(tmp_path, monkeypatch):
    """The order of writes, as the file system sees them (each target's final rename)."""
    import os

    order: list[str] = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        order.append(pathlib.Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    files = write_zoom(tmp_path, "cat", tiny_zoom(), SAVE, factor=4, notes=[])
    written = {p.name for p in (tmp_path / "images" / "cat").iterdir()}
    assert written == {
        "state_0.png",
        "state_1.png",
        "input_1.png",
        "prompt_1.txt",
        "strip.png",
        "zoom.gif",
        "zoom.json",
    }
    assert order[-1] == "zoom.json" and order.count("zoom.json") == 1
    assert written - {"zoom.json"} <= set(order[:-1])  # every other file was in place before it
    record = json.loads((tmp_path / "images" / "cat" / "zoom.json").read_text())
    assert record["prompts"] == ["a red square"] and record["scales"] == [1, 4]
    assert set(record["files"]) == set(files)


def test_an_interrupted_image_is_redone_on_resume(compose_zoom, samples, tmp_path, monkeypatch):
    """End to end: the writer dies at the GIF of the second image; the rerun redoes only that one."""
    import coz.zoom.outputs
    from coz.zoom.tool import run

    cfg = compose_zoom(
        [f"input={samples[0].parent}", "zoom=bicubic", "zoom.steps=1", "batch_size=1", "save.gif_size=32"]
    )
    names = sorted(p.stem for p in samples)
    real_save_gif = coz.zoom.outputs.save_gif
    seen: list[str] = []

    def dying_save_gif(frames, path, *args, **kwargs):
        seen.append(pathlib.Path(path).parent.name)
        if len(seen) == 2:
            raise DiskFull("killed while writing the GIF")
        return real_save_gif(frames, path, *args, **kwargs)

    monkeypatch.setattr(coz.zoom.outputs, "save_gif", dying_save_gif)
    with pytest.raises(DiskFull):
        run(cfg, run_dir=tmp_path)
    done = [n for n in names if is_finished(tmp_path, n)]
    assert done == [seen[0]] and not is_finished(tmp_path, seen[1])

    redone: list[str] = []

    def counting_save_gif(frames, path, *args, **kwargs):
        redone.append(pathlib.Path(path).parent.name)
        return real_save_gif(frames, path, *args, **kwargs)

    monkeypatch.setattr(coz.zoom.outputs, "save_gif", counting_save_gif)
    record = run(cfg, run_dir=tmp_path)
    assert record["finished"] == names
    assert sorted(redone) == sorted(set(names) - {seen[0]})  # the finished image was not redone
    assert set(record["images"]) == set(names)  # run.json keeps the earlier attempt's image too
