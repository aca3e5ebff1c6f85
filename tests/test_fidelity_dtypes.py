"""Casting a loaded model keeps what its class keeps in fp32 (issue 26, point 1; docs/fidelity.md,
"OSEDiff-SD3 inference"). The release loads SD3's text encoders with ``from_pretrained(dtype=fp16)``,
and transformers then keeps ``T5EncoderModel._keep_in_fp32_modules`` (the feed-forward ``wo``) in
fp32, because T5 v1.1's feed-forward output overflows in fp16. A wholesale ``.to(fp16)`` undoes that."""

from __future__ import annotations

import pytest
import torch

from coz.backbones.diffusion.sd3 import OSEDiffSD3


def _wo_weights(t5) -> dict[str, torch.dtype]:
    return {name: p.dtype for name, p in t5.named_parameters() if ".wo." in name}


@pytest.mark.parametrize("text_dtype", ["float16", "bfloat16"])
def test_sd3_text_encoders_keep_t5_wo_in_fp32_as_from_pretrained_does(text_dtype):
    from transformers import T5EncoderModel

    backbone = OSEDiffSD3.tiny(text_dtype=text_dtype)
    clip_l, clip_g, t5 = backbone.text.encoders
    wo = _wo_weights(t5)
    assert wo and T5EncoderModel._keep_in_fp32_modules == ["wo"]
    want = getattr(torch, text_dtype)
    # transformers' rule: _keep_in_fp32_modules apply to fp16 only (bf16 has fp32's range)
    expected = torch.float32 if want == torch.float16 else want
    assert set(wo.values()) == {expected}, wo
    others = {p.dtype for name, p in t5.named_parameters() if ".wo." not in name}
    assert others == {want}
    assert {p.dtype for p in clip_l.parameters()} == {p.dtype for p in clip_g.parameters()} == {want}
    embeds, pooled = backbone.text.encode(["a cat, fur"])  # T5 runs with its fp32 wo (it casts into it)
    assert torch.isfinite(embeds).all() and torch.isfinite(pooled).all()


def test_cast_keeps_strict_modules_in_fp32_for_bf16_too():
    from torch import nn

    from coz.run.dtypes import cast_keeping_fp32

    class Net(nn.Module):
        _keep_in_fp32_modules_strict = ["norm"]

        def __init__(self):
            super().__init__()
            self.proj, self.norm = nn.Linear(2, 2), nn.LayerNorm(2)

    for dtype in (torch.float16, torch.bfloat16):
        net = cast_keeping_fp32(Net(), dtype)
        assert (net.proj.weight.dtype, net.norm.weight.dtype) == (dtype, torch.float32)


def test_adaln_lora_layers_return_fp16_as_the_released_lora_injected_linear():
    backbone = OSEDiffSD3.tiny()  # transformer in fp32, as released
    layer = backbone.transformer.get_submodule(backbone.lora_names[0])
    torch.nn.init.normal_(layer.lora_up.weight)  # a LoRA that changes something
    x = torch.randn(2, layer.linear.in_features)
    with torch.no_grad():
        # the release's LoraInjectedLinear: (linear(x) + up(down(x)) * scale).half(), in an fp32 model
        released = (layer.linear(x.float()) + layer.lora_up(layer.lora_down(x.float())) * layer.scale).half()
        out = layer(x)
    assert out.dtype == torch.float16 and torch.equal(out, released)
    with torch.no_grad():
        images = backbone.upscale(torch.rand(1, 3, 32, 32), ["a cat"])  # the model runs on the rounded values
    assert images.dtype == torch.float32 and torch.isfinite(images).all()

    plain = OSEDiffSD3.tiny(adaln_fp16=False)
    layer = plain.transformer.get_submodule(plain.lora_names[0])
    assert layer(x).dtype == torch.float32


def test_training_rounds_the_adaln_loras_rank_activation_to_fp16_as_add_mp_hook():
    from coz.train_sr.generators import SD3Generator

    backbone = OSEDiffSD3.tiny()
    SD3Generator(
        backbone
    )  # training: the released add_mp_hook (lora_down output .half(), lora_up input .float())
    layer = backbone.transformer.get_submodule(backbone.lora_names[0])
    torch.nn.init.normal_(layer.lora_up.weight)
    x = torch.randn(3, layer.linear.in_features) * 30  # a rank activation that fp16 visibly rounds
    with torch.no_grad():
        h = layer.lora_down(x.float()).half().float()
        released = (layer.linear(x.float()) + layer.lora_up(h) * layer.scale).half()
        assert layer.fp16_rank and torch.equal(layer(x), released)
