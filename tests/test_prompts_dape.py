"""DAPE: thresholds, LoRA layout, RAM/DAPE checkpoint keys (synthetic), the tiny twin, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from coz.errors import CozError
from coz.prompts.dape import DAPEPrompts, LoRALinear, load_ram_state, load_thresholds
from coz.prompts.tiny_dape import TINY_TAGS, build_tiny_dape, tiny_tagger


def views(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(n)]


def test_merged_qkv_lora_updates_q_and_v_only():
    torch.manual_seed(0)
    layer = LoRALinear(6, 18, r=2, lora_groups=(True, False, True))
    assert layer.lora_A.shape == (4, 6) and layer.lora_B.shape == (12, 2)  # loralib MergedLinear shapes
    layer.lora_B.data.normal_()
    delta = layer.delta_weight()
    torch.testing.assert_close(delta[:6], layer.lora_B[:6] @ layer.lora_A[:2] / 2)
    assert torch.all(delta[6:12] == 0)
    torch.testing.assert_close(delta[12:], layer.lora_B[6:] @ layer.lora_A[2:] / 2)


def test_thresholds_are_per_class_with_068_default(tmp_path):
    (tmp_path / "t.txt").write_text("0.9\n0.5\n")
    thresholds = load_thresholds(tmp_path / "t.txt", 4)
    assert thresholds.tolist() == pytest.approx([0.9, 0.5, 0.68, 0.68])
    prompts = DAPEPrompts(tiny_tagger(num_tags=4), ["sky", "tree", "fur", "rock"], thresholds, image_size=64)
    scores = torch.tensor([[0.95, 0.5, 0.69, 0.1], [0.85, 0.51, 0.68, 0.99]])
    assert prompts.select(torch.logit(scores)) == ["sky, fur", "tree, rock"]  # strictly above
    with pytest.raises(CozError, match="3 thresholds for 2 tags"):
        (tmp_path / "u.txt").write_text("0.1 0.2 0.3")
        load_thresholds(tmp_path / "u.txt", 2)


def test_tiny_dape_tags_views_at_its_resolution():
    prompts = build_tiny_dape()
    texts = prompts.extract(views(), [None] * 3)
    assert len(texts) == 3
    for text in texts:
        tags = text.split(", ")
        assert set(tags) <= set(TINY_TAGS) and tags == sorted(tags, key=TINY_TAGS.index)
    x = prompts.preprocess(views(1))
    assert x.shape == (1, 3, 64, 64) and -2.2 < x.min() and x.max() < 2.7  # ImageNet-normalised


def test_ram_and_dape_key_layout_round_trip(tmp_path):
    source = tiny_tagger(seed=1)
    state = source.state_dict()
    for key in (
        "label_embed",
        "fc.weight",
        "image_proj.weight",
        "wordvec_proj.weight",
        "tagging_head.encoder.layer.0.crossattention.self.query.lora_A",
        "tagging_head.encoder.layer.0.crossattention.self.key.lora_B",
        "tagging_head.encoder.layer.0.crossattention.self.value.weight",
        "tagging_head.encoder.layer.0.crossattention.output.LayerNorm.weight",
        "tagging_head.encoder.layer.0.intermediate.dense.weight",
        "tagging_head.encoder.layer.0.output.dense.weight",
    ):
        assert key in state, key
    ram = {k: v for k, v in state.items() if "lora_" not in k}
    ram["tag_encoder.encoder.layer.0.attention.self.query.weight"] = torch.zeros(2, 2)  # captioning: ignored
    dape = {k: v for k, v in state.items() if "lora_" in k}
    torch.save({"model": ram}, tmp_path / "ram.pth")
    torch.save(dape, tmp_path / "dape.pth")
    target = tiny_tagger(seed=2)
    load_ram_state(target, tmp_path / "ram.pth", tmp_path / "dape.pth")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))

    torch.save({**dape, "visual_encoder.head.lora_A": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CozError, match=r"bad.pth: 1 key\(s\) match no parameter.*visual_encoder.head.lora_A"):
        load_ram_state(target, None, tmp_path / "bad.pth")
    torch.save({k: v for k, v in ram.items() if k != "fc.weight"}, tmp_path / "partial.pth")
    with pytest.raises(CozError, match="missing, e.g. fc.weight"):
        load_ram_state(target, tmp_path / "partial.pth", None)


def test_missing_dape_files_fail_clearly(compose_zoom, tmp_path):
    from coz.prompts import build_prompt_extractor

    cfg = compose_zoom(["prompt=dape", "input=x.png"]).prompt
    with pytest.raises(CozError, match="prompt.ram_weights=PATH: ram_swin_large_14m.pth"):
        build_prompt_extractor(cfg)
    cfg.ram_weights, cfg.dape_weights = str(tmp_path / "ram_swin_large_14m.pth"), str(tmp_path / "DAPE.pth")
    with pytest.raises(CozError, match="prompt.tags=PATH: .*ram_tag_list.txt"):
        build_prompt_extractor(cfg)
    cfg.tags = str(tmp_path / "tags.txt")
    with pytest.raises(CozError, match="ram_swin_large_14m.pth: no such file"):
        build_prompt_extractor(cfg)
