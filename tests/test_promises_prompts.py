"""``prompt.adapter=`` in ``coz.zoom`` (README, Prompt modes): the adapter must change what the prompt
extractor says, and the prompts must be those of the adapted model."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A paper-config LoRA with random non-zero B on the tiny twin zoom builds, saved as PEFT saves it."""
    from peft import get_peft_model

    from coz.prompts.lora import paper_lora_config
    from coz.prompts.tiny import build_tiny_vlm

    model, _ = build_tiny_vlm()
    peft_model = get_peft_model(copy.deepcopy(model), paper_lora_config())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    return folder


def test_prompt_adapter_changes_the_prompts_of_coz_zoom(compose_zoom, samples, adapter, tmp_path):
    from coz.prompts import build_prompt_extractor
    from coz.zoom.tool import run

    base = ["backbone=bicubic", "prompt=tiny_vlm", "zoom.steps=1", f"input={samples[0]}"]
    plain = run(compose_zoom(base), run_dir=tmp_path / "plain")
    cfg = compose_zoom([*base, f"prompt.adapter={adapter}"])
    adapted = run(cfg, run_dir=tmp_path / "adapted")
    name = samples[0].stem
    plain_prompt = plain["images"][name]["prompts"][0]
    adapted_prompt = adapted["images"][name]["prompts"][0]
    assert plain_prompt != adapted_prompt
    # the adapted prompt is what the adapted extractor says about the same view and previous state
    folder = tmp_path / "adapted" / "images" / name
    view, x0 = (Image.open(folder / f).convert("RGB") for f in ("input_1.png", "state_0.png"))
    extractor = build_prompt_extractor(cfg.prompt, device="cpu")
    assert extractor.extract([view], [x0])[0] == adapted_prompt
