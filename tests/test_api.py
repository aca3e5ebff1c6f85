"""The Python API (``coz.Zoomer``, ``coz.zoom_image``): the command line's configs and results,
without writing files unless asked."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import coz
from coz.api import compose_zoom_config, quote
from coz.errors import CozError
from coz.images import ImageInputError

REPO = Path(__file__).resolve().parent.parent
CHEAP = {"backbone": "bicubic", "steps": 2, "zoom.size": 128}  # no model: a fraction of a second


@pytest.fixture(scope="module")
def cheap() -> coz.Zoomer:
    return coz.Zoomer(**CHEAP)


def test_import_coz_stays_cheap():
    code = "import coz, sys; assert not {'torch', 'hydra', 'coz.api'} & set(sys.modules); assert 'Zoomer' in dir(coz)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # the API loads on first use


def test_defaults_are_the_command_line_defaults(compose_zoom):
    api = compose_zoom_config([])
    cli = compose_zoom([])
    assert api == cli
    assert (api.backbone.name, api.prompt.name, api.zoom.steps, api.zoom.mode) == (
        "realesrgan",
        "null",
        4,
        "recursive_multiscale",
    )


def test_keywords_and_strings_compose_alike():
    by_keyword = coz.Zoomer(
        backbone="bicubic", prompt="none", steps=3, user_prompt="a, b", **{"zoom.size": 64}
    )
    by_string = coz.Zoomer(
        "backbone=bicubic", "prompt=null", "zoom.steps=3", "user_prompt='a, b'", "zoom.size=64"
    )
    assert by_keyword.config == by_string.config
    assert by_keyword.config.prompt.name == "null"  # "none" is the null prompt
    assert by_keyword.config.user_prompt == "a, b"  # a comma in a keyword value is text, not a sweep


def test_composes_inside_a_hydra_app():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from coz.run.cli import tool_config_dir

    with initialize_config_dir(config_dir=tool_config_dir("app"), version_base="1.3"):  # as coz.app runs
        outer = GlobalHydra.instance().hydra
        assert compose_zoom_config(["backbone=bicubic"]).backbone.name == "bicubic"
        assert GlobalHydra.instance().hydra is outer


@pytest.mark.parametrize("text", ["it's", "a\\b", "ends with \\", "\\'", "${x}", "a=b, c", ""])
def test_quote_round_trips(text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"user_prompt={quote(text)}")
    assert parsed.value() == text


def test_bad_options_are_one_line_errors():
    with pytest.raises(CozError, match="no_such_option") as err:
        coz.Zoomer(no_such_option=1)
    assert "\n" not in str(err.value)
    with pytest.raises(CozError) as err:  # the CLI's line, not Hydra's dump of its search path
        coz.Zoomer(backbone="spam")
    assert str(err.value).startswith("backbone=spam: no such option; did you mean span? (backbone: bicubic, ")
    with pytest.raises(CozError, match=r"^stepz: no such key; did you mean zoom.steps\?$"):
        coz.Zoomer(stepz=3)
    with pytest.raises(CozError, match="'key=value'"):
        coz.Zoomer("backbone")
    with pytest.raises(CozError, match="also given as a keyword"):
        coz.Zoomer("zoom.steps=2", steps=3)
    with pytest.raises(CozError, match="steps"):
        coz.Zoomer(backbone="bicubic", steps=0)


def test_zoom_matches_the_command_line(cheap, samples, compose_zoom, tmp_path):
    from coz.zoom.tool import run

    result = cheap.zoom(samples[0])
    assert result.name == samples[0].stem
    assert result.scales == [1, 4, 16]
    assert result.prompts == ["", ""]  # the null prompt
    assert [s.size for s in result.states] == [(128, 128)] * 3

    cfg = compose_zoom(["backbone=bicubic", "zoom.steps=2", "zoom.size=128", f"input={samples[0]}"])
    run(cfg, tmp_path / "cli")
    for i, state in enumerate(result.states):
        cli_state = Image.open(tmp_path / "cli" / "images" / samples[0].stem / f"state_{i}.png")
        assert np.array_equal(np.asarray(state), np.asarray(cli_state)), f"state {i} differs"


def test_zoom_writes_nothing_unless_asked(cheap, samples, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cheap.zoom(Image.open(samples[1]))  # a PIL image
    assert list(tmp_path.iterdir()) == []
    strip = result.strip()
    assert strip.width > 3 * 128 and strip.height > 128
    gif = result.gif(tmp_path / "zoom.gif", size=32)
    with Image.open(gif) as frames:
        assert frames.is_animated and frames.size == (32, 32)
    files = result.save(tmp_path / "run")
    assert (tmp_path / "run" / "images" / result.name / "zoom.json").is_file()
    assert {"state_0", "state_2", "strip", "gif"} <= set(files)


def test_lists_folders_and_progress(cheap, samples):
    seen = []
    results = cheap.zoom(
        [samples[0], Image.open(samples[1])], on_step=lambda done, total: seen.append((done, total))
    )
    assert [r.name for r in results] == [samples[0].stem, samples[1].stem]
    assert seen == [(2, 4), (4, 4)]  # one batch of two images, two steps
    folder = cheap.zoom(samples[0].parent)
    assert sorted(r.name for r in folder) == sorted(p.stem for p in samples)


def test_bad_images_fail_before_any_step(cheap, samples, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    seen = []
    with pytest.raises(ImageInputError, match="notes.png: not an image"):
        cheap.zoom([samples[0], bad], on_step=lambda *a: seen.append(a))
    assert seen == []
    with pytest.raises(ImageInputError, match="no such file"):
        cheap.zoom(tmp_path / "missing.jpg")


def test_realesrgan_loads_once_and_zooms(samples):
    zoomer = coz.Zoomer(backbone="realesrgan", prompt="none", steps=1, **{"zoom.size": 64})
    backbone = zoomer.chain.backbone
    first = zoomer.zoom(samples[0])
    second = zoomer.zoom(samples[0])
    assert zoomer.chain.backbone is backbone
    assert first.scales == [1, 4] and first.states[1].size == (64, 64)
    assert np.array_equal(np.asarray(first.states[1]), np.asarray(second.states[1]))  # seeded per call
    assert np.abs(np.asarray(first.states[1], float) - np.asarray(first.states[0], float)).mean() > 1


def test_zoom_image_in_one_call(samples):
    result = coz.zoom_image(samples[0], "zoom=nearest", steps=1, **{"zoom.size": 64})
    assert result.scales == [1, 4] and result.prompts == [None]  # no model, no prompt


def test_the_example_script_runs(samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["zoom_api.py", str(samples[0]), str(tmp_path), *_cheap_strings()])
    runpy.run_path(str(REPO / "examples" / "zoom_api.py"), run_name="__main__")
    assert "x16: ''" in capsys.readouterr().out
    for name in ("strip.png", "zoom.gif", "x16.png"):
        assert (tmp_path / name).is_file()
    # a missing photo: one line (was a traceback), and no output folder
    monkeypatch.setattr(sys, "argv", ["zoom_api.py", str(tmp_path / "nope.png"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(REPO / "examples" / "zoom_api.py"), run_name="__main__")
    assert stopped.value.code == f"error: {tmp_path / 'nope.png'}: no such file or folder"
    assert not (tmp_path / "out").exists()


def _cheap_strings() -> list[str]:
    return ["backbone=bicubic", "zoom.steps=2", "zoom.size=128"]
