"""Qwen2.5-VL prompt extraction with the tiny offline twin: messages, template, batching, adapters,
errors (docs/fidelity.md "Prompts")."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from coz.errors import CozError
from coz.prompts.vlm import AR1_INSTRUCTION, AR2_INSTRUCTION, VLMPrompts, build_messages

AUTHORS_REGEX = r"^(model).*\.(q_proj|o_proj|gate_proj|down_proj|k_proj|up_proj|v_proj)$"


@pytest.fixture(scope="module")
def tiny():
    from coz.prompts.tiny import build_tiny_vlm

    return build_tiny_vlm()


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(6)]


def extractor(model, processor, **kw) -> VLMPrompts:
    return VLMPrompts(model, processor, max_new_tokens=kw.pop("max_new_tokens", 6), **kw)


def token_outputs(prompts: VLMPrompts, views, previous) -> list[list[int]]:
    """The generated ids, to compare extractors exactly."""
    texts, ims = prompts.render(views, previous)
    inputs = prompts.processor(text=texts, images=ims, padding=True, return_tensors="pt")
    out = prompts.model.generate(**inputs, do_sample=False, max_new_tokens=prompts.max_new_tokens)
    return out[:, inputs["input_ids"].shape[1] :].tolist()


def test_messages_are_the_authors(images):
    prev, view = images[:2]
    assert build_messages(view, prev) == [
        {"role": "system", "content": AR2_INSTRUCTION},
        {"role": "user", "content": [{"type": "image", "image": prev}, {"type": "image", "image": view}]},
    ]
    assert build_messages(view, None) == [
        {"role": "system", "content": AR1_INSTRUCTION},
        {"role": "user", "content": [{"type": "image", "image": view}]},
    ]
    assert AR2_INSTRUCTION == (
        "The second image is a zoom-in of the first image. Based on this knowledge, "
        "what is in the second image? Give me a set of words."
    )
    assert AR1_INSTRUCTION == "What is in this image? Give me a set of words."


def test_rendered_template_and_image_order(tiny, images):
    model, processor = tiny
    prompts = extractor(model, processor)
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    texts, ims = prompts.render([images[1], images[3]], [images[0], None])
    assert texts[0] == (
        f"<|im_start|>system\n{AR2_INSTRUCTION}<|im_end|>\n"
        f"<|im_start|>user\n{pad}{pad}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert texts[1] == (
        f"<|im_start|>system\n{AR1_INSTRUCTION}<|im_end|>\n"
        f"<|im_start|>user\n{pad}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ims == [images[0], images[1], images[3]]  # previous state first, then the zoom
    # the processor expands each placeholder to the image's tokens (112x112 -> 8x8 patches -> 16)
    inputs = processor(text=texts[:1], images=ims[:2], return_tensors="pt")
    assert (inputs["input_ids"] == 151655).sum() == 2 * 16
    first = processor(text=[texts[1]], images=[images[0]], return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs["pixel_values"][: len(first)], first)

    ar1 = extractor(model, processor, multiscale=False)
    assert ar1.render([images[1]], [images[0]])[0][0] == texts[1]


def test_batched_equals_one_by_one(tiny, images):
    model, processor = tiny
    prompts = extractor(model, processor, max_new_tokens=8)
    views, previous = images[1:5], [images[0], None, images[2], None]  # mixed lengths: left padding matters
    batched = token_outputs(prompts, views, previous)
    assert batched == [token_outputs(prompts, [v], [p])[0] for v, p in zip(views, previous, strict=True)]
    texts = prompts.extract(views, previous)
    assert texts == processor.batch_decode(batched, skip_special_tokens=True) and len(texts) == 4


@pytest.fixture(scope="module")
def saved_adapter(tiny, images, tmp_path_factory):
    """A paper-config LoRA on the tiny model, with random (non-zero) B, saved with save_pretrained."""
    from peft import get_peft_model

    from coz.prompts.lora import paper_lora_config

    model, processor = tiny
    peft_model = get_peft_model(copy.deepcopy(model), paper_lora_config())
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(folder)
    expected = token_outputs(extractor(peft_model.eval(), processor), images[1:3], [images[0], None])
    return folder, expected


def lora_modules(model) -> list[str]:
    return sorted(
        n.removeprefix("base_model.model.")
        for n, m in model.named_modules()
        if hasattr(m, "lora_A") and isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)
    )


def test_adapter_round_trip(tiny, images, saved_adapter):
    from coz.prompts.lora import load_adapter

    model, processor = tiny
    folder, expected = saved_adapter
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 32, 0.05)
    loaded = load_adapter(copy.deepcopy(model), folder)
    names = lora_modules(loaded)
    assert len(names) == 2 * 7 and all(n.startswith("model.language_model.layers.") for n in names)
    assert token_outputs(extractor(loaded, processor), images[1:3], [images[0], None]) == expected
    base = token_outputs(extractor(model, processor), images[1:3], [images[0], None])
    assert base != expected  # the adapter changes what the model says

    merged = load_adapter(copy.deepcopy(model), folder, merge=True)
    assert not lora_modules(merged)
    texts, ims = extractor(loaded, processor).render(images[1:2], [images[0]])
    inputs = processor(text=texts, images=ims, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, loaded(**inputs).logits, atol=1e-4, rtol=1e-4)


def write_old_layout(src, dst, rename, target_modules):
    """Re-save an adapter as transformers 4.49 would have named it."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    weights = load_file(src / "adapter_model.safetensors")
    save_file({rename(k): v.contiguous() for k, v in weights.items()}, dst / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text())
    config["target_modules"] = target_modules
    (dst / "adapter_config.json").write_text(json.dumps(config))


def test_old_module_names_are_remapped(tiny, images, saved_adapter, tmp_path):
    from safetensors.torch import load_file

    from coz.prompts.lora import load_adapter, new_to_old, old_to_new

    assert old_to_new("model.layers.0.self_attn.q_proj") == "model.language_model.layers.0.self_attn.q_proj"
    assert old_to_new("visual.blocks.0.attn.qkv") == "model.visual.blocks.0.attn.qkv"
    assert old_to_new("lm_head") == "lm_head"
    assert new_to_old("model.language_model.norm") == "model.norm"
    model, processor = tiny
    folder, expected = saved_adapter
    old = tmp_path / "checkpoint-10000"
    write_old_layout(folder, old, lambda k: k.replace("model.language_model.", "model."), AUTHORS_REGEX)
    assert any(
        k.startswith("base_model.model.model.layers.0.self_attn.q_proj")
        for k in load_file(old / "adapter_model.safetensors")
    )
    loaded = load_adapter(copy.deepcopy(model), old)
    names = lora_modules(loaded)
    # the authors' regex, applied to old names, adapts the language model only (not the vision MLPs)
    assert len(names) == 14 and not any("visual" in n for n in names)
    assert token_outputs(extractor(loaded, processor), images[1:3], [images[0], None]) == expected


def test_old_vision_tower_keys_are_remapped(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    from coz.prompts.lora import load_adapter

    model, _ = tiny
    new = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=r"^model\.visual\..*\.qkv$"))
    new.save_pretrained(tmp_path / "new")
    write_old_layout(
        tmp_path / "new",
        tmp_path / "old",
        lambda k: k.replace("model.model.visual.", "model.visual."),
        r"^visual\..*\.qkv$",
    )
    loaded = load_adapter(copy.deepcopy(model), tmp_path / "old")
    assert lora_modules(loaded) == ["model.visual.blocks.0.attn.qkv", "model.visual.blocks.1.attn.qkv"]


def test_unmatched_adapter_keys_fail_clearly(tiny, saved_adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    from coz.prompts.lora import load_adapter

    model, _ = tiny
    folder, _ = saved_adapter
    bad = "base_model.model.model.language_model.layers.7.self_attn.q_proj.lora_A.weight"
    shutil.copytree(folder, tmp_path / "bad")
    weights = load_file(tmp_path / "bad" / "adapter_model.safetensors")
    weights[bad] = torch.zeros(8, 32)
    save_file(weights, tmp_path / "bad" / "adapter_model.safetensors")
    with pytest.raises(CozError, match=r"1 key\(s\) match no LoRA module.*layers\.7\.self_attn\.q_proj"):
        load_adapter(copy.deepcopy(model), tmp_path / "bad")
    with pytest.raises(CozError, match="adapter_config.json"):
        load_adapter(copy.deepcopy(model), tmp_path)


def test_missing_model_is_one_clear_error_without_network(compose_zoom, monkeypatch, tmp_path, no_network):
    from coz.prompts import build_prompt_extractor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    cfg = compose_zoom(["prompt=vlm", "input=x.png"]).prompt
    with pytest.raises(CozError) as err:
        build_prompt_extractor(cfg, device="cpu")
    assert no_network == []  # failed at once, offline: no connection tried
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in str(err.value) and "hf download" in str(err.value)
    assert "\n" not in str(err.value)
    cfg.model = str(tmp_path / "no-such-folder")
    with pytest.raises(CozError, match="no such folder"):
        build_prompt_extractor(cfg, device="cpu")


def test_online_without_network_a_missing_model_is_one_try_then_one_line(
    compose_zoom, monkeypatch, no_network
):
    """Not in the cache and HF_HUB_OFFLINE not set, on a machine without network: huggingface_hub
    retried every file with back-off (2.5 minutes for prompt=vlm) before its error. One request to
    the hub first, then one line; the same for a diffusion backbone's model and GRPO's models."""
    import socket

    from huggingface_hub import constants

    from coz.backbones.diffusion.hub import check_available, resolve_model
    from coz.prompts import build_prompt_extractor

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    lookups = []  # a machine without network fails at the name lookup already

    def no_lookup(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    cfg = compose_zoom(["prompt=vlm", "input=x.png", "prompt.model=coz-tests/not-in-any-cache"]).prompt
    for refuse, option in (
        (lambda: build_prompt_extractor(cfg, device="cpu"), "prompt.model"),
        (lambda: resolve_model("coz-tests/not-in-any-cache", "backbone.model"), "backbone.model"),
        (lambda: check_available("coz-tests/not-in-any-cache", None, "critic.model"), "critic.model"),
    ):
        no_network.clear()
        lookups.clear()
        with pytest.raises(CozError) as err:
            refuse()
        assert str(err.value).startswith(
            f"{option}=coz-tests/not-in-any-cache: not in the Hugging Face cache, and "
            f"{constants.ENDPOINT} cannot be reached"
        )
        assert len(lookups) + len(no_network) == 1  # one try, no retries


def test_tiny_vlm_through_the_builder_is_cached_and_clean(compose_zoom, images):
    from coz.prompts import build_prompt_extractor

    cfg = compose_zoom(["prompt=tiny_vlm", "input=x.png"]).prompt
    prompts = build_prompt_extractor(cfg, device="cpu")
    first = prompts.extract(images[1:3], [images[0], images[1]])
    cache = prompts.inner.cache
    hits = cache.hits
    again = prompts.extract(images[1:3], [images[0], images[1]])
    assert again == first and cache.hits == hits + 2
    assert all(isinstance(t, str) and "  " not in t for t in first)
