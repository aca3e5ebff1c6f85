"""Prompt-extractor settings checked against the authors' releases and a second library: 16 new tokens
per full-image tile with or without an adapter, the VLM in bfloat16 on GPUs (float32 on the CPU),
and DAPE's downsizing to 384 antialiased like PIL's bilinear filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from coz.prompts import _build_vlm, max_new_tokens
from coz.prompts.dape import DAPEPrompts
from coz.prompts.tiny_dape import tiny_tagger


def test_full_image_tiles_get_16_new_tokens_without_an_adapter_too():
    # the full-image script's setting is per tile, whatever the adapter (docs/fidelity.md, "Prompts")
    assert max_new_tokens("auto", adapter=False, tiles=True) == 16
    assert max_new_tokens("auto", adapter=False, tiles=False) == 128


class _Loaded(Exception):
    pass


@pytest.mark.parametrize(("device", "expected"), [("cuda", torch.bfloat16), ("cpu", torch.float32)])
def test_the_vlm_loads_in_bfloat16_on_gpus(compose_zoom, monkeypatch, device, expected):
    import coz.prompts.vlm as vlm

    def record(model, revision, dtype, device, max_pixels):
        raise _Loaded(dtype)

    monkeypatch.setattr(vlm, "load_qwen_vl", record)
    cfg = compose_zoom(["prompt=vlm", "input=x"]).prompt  # prompt.dtype=auto
    assert cfg.dtype == "auto"
    with pytest.raises(_Loaded) as loaded:  # no GPU needed: the dtype is chosen before anything loads
        _build_vlm(cfg, device)
    assert loaded.value.args[0] == expected


def test_dape_downsizes_its_views_antialiased_like_pil():
    # one-pixel stripes: an antialiased 512 -> 384 bilinear averages them to mid grey, as PIL's filter
    # (support scaled by the reduction) does; plain bilinear sampling keeps stripes of full contrast
    stripes = np.zeros((512, 512, 3), np.uint8)
    stripes[:, ::2] = 255
    view = Image.fromarray(stripes)
    prompts = DAPEPrompts(
        tiny_tagger(num_tags=4), ["a", "b", "c", "d"], torch.full((4,), 0.5), image_size=384
    )
    x = prompts.preprocess([view]).float()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet's, as RAM normalises
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = (x * std + mean)[0].permute(1, 2, 0).numpy() * 255
    pil = np.asarray(view.resize((384, 384), Image.BILINEAR)).astype(np.float64)
    assert np.abs(pixels - pil).max() < 3
