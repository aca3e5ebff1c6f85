"""Every prompt option composes; the offline twins run end to end through ``coz.zoom.tool.run``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coz.zoom.tool import run


@pytest.mark.parametrize("prompt", ["null", "dape", "vlm", "vlm_ar1", "tiny_vlm", "tiny_dape"])
def test_every_prompt_option_composes(compose_zoom, prompt):
    cfg = compose_zoom([f"prompt={prompt}", "input=x.png"])
    assert cfg.prompt.name == prompt
    if prompt in ("vlm", "vlm_ar1"):
        assert cfg.prompt.model == "Qwen/Qwen2.5-VL-3B-Instruct" and cfg.prompt.max_new_tokens == "auto"
        assert cfg.prompt.clean is False and cfg.prompt.merge_adapter is True  # verbatim, merged: as released
        assert cfg.prompt.multiscale == (prompt == "vlm")
    if prompt == "dape":
        assert cfg.prompt.thresholds is None and cfg.prompt.image_size == 384  # RAM's file beside the tags


def test_prompt_null_never_imports_transformers():
    code = (
        "import sys, coz.zoom; from coz.prompts import build_prompt_extractor; "
        "build_prompt_extractor(None); print(sorted({'transformers', 'peft', 'timm'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("prompt", ["tiny_vlm", "tiny_dape"])
def test_zoom_with_a_tiny_prompt_extractor_writes_prompts(compose_zoom, samples, tmp_path, prompt):
    cfg = compose_zoom(
        ["backbone=bicubic", f"prompt={prompt}", "zoom.steps=2", "save.gif=false", f"input={samples[0]}"]
    )
    record = run(cfg, run_dir=tmp_path)
    name = samples[0].stem
    assert record["finished"] == [name]
    prompts = [(tmp_path / "images" / name / f"prompt_{i}.txt").read_text(encoding="utf-8") for i in (1, 2)]
    assert prompts == record["images"][name]["prompts"]
    assert json.loads((tmp_path / "images" / name / "zoom.json").read_text())["prompts"] == prompts
    assert all(p == p.strip() for p in prompts)
    if prompt == "tiny_dape":
        assert all(prompts)
    assert record["timings"]["prompt_s"] > 0


def test_an_unknown_twin_shape_is_refused(compose_zoom):
    from coz.errors import CozError
    from coz.prompts.tiny import build_twin

    cfg = compose_zoom(["prompt=tiny_vlm", "prompt.shape=7b", "input=x.png"]).prompt
    with pytest.raises(CozError, match="prompt.shape=7b"):
        build_twin(cfg, "cpu")
