"""Prompt behaviours of the authors' released code (issue 15; docs/fidelity.md "Prompts"):
RAM's per-class threshold file, RAM's legacy-key and non-strict loading, max_new_tokens per release,
OSEDiff-SD2.1's prompt format."""

from __future__ import annotations

import logging

import pytest
import torch

from coz.errors import CozError
from coz.prompts import max_new_tokens
from coz.prompts.dape import THRESHOLD_FILE, DAPEPrompts, load_ram_state, resolve_thresholds
from coz.prompts.tiny_dape import tiny_tagger

TAGS = ["sky", "tree", "body", "rock"]


@pytest.fixture
def tag_files(tmp_path):
    """A tag list with RAM's threshold file beside it (one line per tag; "body" disabled at 1.0 as RAM's)."""
    (tmp_path / "ram_tag_list.txt").write_text("\n".join(TAGS) + "\n")
    (tmp_path / THRESHOLD_FILE).write_text("0.65\n0.8\n1.0\n0.65\n")
    return tmp_path


def test_threshold_file_beside_the_tags_is_the_default_and_decides_the_tags(tag_files):
    thresholds = resolve_thresholds(None, tag_files / "ram_tag_list.txt", len(TAGS))
    assert thresholds.tolist() == pytest.approx([0.65, 0.8, 1.0, 0.65])
    prompts = DAPEPrompts(tiny_tagger(num_tags=4), TAGS, thresholds, image_size=64)
    scores = torch.tensor([[0.66, 0.79, 0.999, 0.6]])
    assert prompts.select(torch.logit(scores)) == ["sky"]  # 0.66 passes 0.65: the 0.68 default would drop it
    uniform = resolve_thresholds("uniform:0.68", tag_files / "ram_tag_list.txt", len(TAGS))
    assert DAPEPrompts(tiny_tagger(num_tags=4), TAGS, uniform, image_size=64).select(torch.logit(scores)) == [
        "tree, body"
    ]


def test_threshold_file_errors_are_one_line(tag_files, tmp_path):
    tags = tag_files / "ram_tag_list.txt"
    (tag_files / THRESHOLD_FILE).unlink()
    with pytest.raises(CozError, match=r"prompt.thresholds=null: no such file .*ram_tag_list_threshold.txt"):
        resolve_thresholds(None, tags, 4)
    with pytest.raises(CozError, match=r"prompts.thresholds=/nope.txt: no such file.*uniform:0.68"):
        resolve_thresholds("/nope.txt", tags, 4, option="prompts.thresholds")
    (tmp_path / "short.txt").write_text("0.5\n0.5\n")
    with pytest.raises(CozError, match="2 thresholds for 4 tags"):
        resolve_thresholds(str(tmp_path / "short.txt"), tags, 4)
    (tmp_path / "bad.txt").write_text("0.5\nx\n0.5\n0.5\n")
    with pytest.raises(CozError, match=r"line 2 \('x'\) is not a number"):
        resolve_thresholds(str(tmp_path / "bad.txt"), tags, 4)
    with pytest.raises(CozError, match=r"uniform:X needs a number X in \[0, 1\]"):
        resolve_thresholds("uniform:high", tags, 4)


def test_ram_checkpoint_with_legacy_names_and_extra_keys_loads_like_the_official_loader(tmp_path, caplog):
    source = tiny_tagger(seed=1)
    ram = {
        k.replace("tagging_head", "vision_multi"): v
        for k, v in source.state_dict().items()
        if "lora_" not in k
    }
    assert any(k.startswith("vision_multi.") for k in ram)
    ram["text_decoder.cls.predictions.bias"] = torch.zeros(3)  # captioning branch: silently ignored
    ram["some_future_head.weight"] = torch.zeros(2, 2)  # unknown: ignored, counted once
    ram["another.unknown"] = torch.zeros(1)
    torch.save({"model": ram}, tmp_path / "ram.pth")
    dape = {k: v for k, v in source.state_dict().items() if "lora_" in k}
    torch.save({**dape, "optimizer_step": torch.zeros(1)}, tmp_path / "dape.pth")
    target = tiny_tagger(seed=2)
    with caplog.at_level(logging.INFO, logger="coz.prompts"):
        load_ram_state(target, tmp_path / "ram.pth", tmp_path / "dape.pth")
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(lines) == 2 and "ram.pth: 2 key(s)" in lines[0] and "dape.pth: 1 key(s)" in lines[1]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))

    torch.save({"model": {"text_decoder.x": torch.zeros(1), "foo": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CozError, match=r"other.pth: none of its 2 key\(s\) matches a parameter"):
        load_ram_state(target, tmp_path / "other.pth", None)


def test_max_new_tokens_follow_the_release_of_the_setting():
    assert max_new_tokens("auto", adapter=False, tiles=False) == 128  # first release, no adapter
    assert max_new_tokens("auto", adapter=True, tiles=False) == 32  # later release, GRPO adapter
    assert max_new_tokens("auto", adapter=True, tiles=True) == 16  # full-image script, per tile
    assert max_new_tokens(48, adapter=False, tiles=True) == 48


def test_sd21_prompt_format_is_osediffs_test_script():
    from coz.backbones.diffusion.sd21 import OSEDiffSD21

    backbone = OSEDiffSD21.__new__(OSEDiffSD21)  # format_prompt needs no weights
    backbone.prompt_format = "osediff"
    assert backbone.format_prompt("cat, fur", "") == "cat, fur, ,"
    assert backbone.format_prompt("cat, fur", "sharp") == "cat, fur, sharp,"
    assert backbone.format_prompt("", "") == ""  # no extracted text: nothing to format
    backbone.prompt_format = "coz"
    assert backbone.format_prompt("cat, fur", "") == "cat, fur"
