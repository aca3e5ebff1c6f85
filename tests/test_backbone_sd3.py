"""OSEDiff-SD3 (``backbone=sd3``) through its tiny offline twin: the one step, LoRA placement and
trainability, both checkpoint formats, prompt embedding, determinism, colour fixes, clear errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from coz.backbones.diffusion.color_fix import (
    adain_color_fix,
    color_fix,
    wavelet_blur,
    wavelet_color_fix,
    wavelet_decompose,
)
from coz.backbones.diffusion.lora_formats import (
    adaln_lora_modules,
    inject_adaln_lora,
    save_released_transformer_lora,
)
from coz.backbones.diffusion.sd3 import OSEDiffSD3
from coz.backbones.tiny.sd3 import CLIP_DIMS, JOINT_DIM
from coz.errors import CozError

PROMPTS = ["a cat on a sofa", "brick wall, window"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g)  # (B, 3, H, W): 8x8 latents, 4x4 patches


def randomize_lora(backbone: OSEDiffSD3, seed: int = 0) -> None:
    """Give every LoRA tensor (including the zero-initialised ups) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def out(backbone: OSEDiffSD3, images: torch.Tensor, seed: int = 7) -> torch.Tensor:
    backbone.reseed(seed)
    return backbone.upscale(images, PROMPTS)


def test_one_step_forward_shape_dtype_range(images):
    b = OSEDiffSD3.tiny()
    assert b.takes_upsampled_input and b.scale == 4
    y = b.upscale(images, PROMPTS)
    assert y.shape == images.shape and y.dtype == torch.float32 and not y.requires_grad
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.std() > 0


def test_lora_sits_on_every_adaln_linear_of_sd3_medium_sized_transformer():
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):  # SD3-medium's shape, no memory
        t = SD3Transformer2DModel(
            sample_size=128,
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=192,
        )
        names = inject_adaln_lora(t, rank=4)
    mods = adaln_lora_modules(t)
    assert len(names) == 47 and [n for n, _ in mods] == names
    assert names[:3] == [
        "transformer_blocks.0.norm1.linear",
        "transformer_blocks.0.norm1_context.linear",
        "transformer_blocks.1.norm1.linear",
    ]
    assert all(m.lora_up.weight.shape == (9216, 4) and m.lora_down.weight.shape == (4, 1536) for _, m in mods)
    assert sum(m.lora_up.weight.numel() + m.lora_down.weight.numel() for _, m in mods) == 47 * 4 * (
        9216 + 1536
    )


def test_only_lora_is_trainable_and_gets_gradients(images):
    frozen = OSEDiffSD3.tiny()
    modules = [frozen.transformer, frozen.vae, *frozen.text.modules()]
    assert not any(p.requires_grad for m in modules for p in m.parameters())

    b = OSEDiffSD3.tiny(trainable=True)
    named = {
        f"{i}.{n}": p
        for i, m in enumerate([b.transformer, b.vae, *b.text.modules()])
        for n, p in m.named_parameters()
    }
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all(("lora_" in n) for n in trainable)
    assert len(trainable) == 2 * len(b.lora_names) + 2 * len(b.vae_lora_targets)
    y, _ = b.restore(images * 2 - 1, PROMPTS)
    y.square().mean().backward()
    ups = [m.lora_up.weight for _, m in adaln_lora_modules(b.transformer)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)


def test_prompt_embedding_layout_and_drop_t5():
    b = OSEDiffSD3.tiny()
    embeds, pooled = b.encode_prompt(PROMPTS)
    clip_width = sum(CLIP_DIMS)
    assert embeds.shape == (2, 77 + 512, JOINT_DIM) and pooled.shape == (2, clip_width)
    assert embeds[:, :77, clip_width:].abs().max() == 0  # CLIP-L|G zero-padded to the T5 width
    assert embeds[:, :77, :clip_width].abs().min(-1).values.max() > 0
    assert embeds[:, 77:].abs().amax(dim=(1, 2)).min() > 0  # T5 tokens

    no_t5 = OSEDiffSD3.tiny(drop_t5=True)
    e2, p2 = no_t5.encode_prompt(PROMPTS)
    assert e2.shape == embeds.shape and e2[:, 77:].abs().max() == 0
    assert torch.equal(e2[:, :77], embeds[:, :77]) and torch.equal(p2, pooled)


def test_offloaded_text_encoders_stay_on_cpu_and_change_nothing(images):
    a, b = OSEDiffSD3.tiny(), OSEDiffSD3.tiny(offload_text_encoders=True)
    assert torch.equal(out(a, images), out(b, images))
    assert all(p.device.type == "cpu" for m in b.text.modules() for p in m.parameters())


def test_same_seed_same_output_other_seed_other_output(images):
    a, b = OSEDiffSD3.tiny(seed=3), OSEDiffSD3.tiny(seed=3)
    randomize_lora(a)
    randomize_lora(b)
    assert torch.equal(out(a, images), out(b, images))
    assert torch.equal(out(a, images), out(a, images))  # reseeding restarts the posterior noise
    assert not torch.equal(out(a, images, seed=7), out(a, images, seed=8))


def test_latent_shift_options():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    test, train, none = (OSEDiffSD3.tiny(latent_shift=s) for s in ("test", "train", "none"))
    cfg = test.vae.config
    zs = []
    for b in (test, train, none):
        b.reseed(1)
        with torch.no_grad():
            zs.append(b.encode(x))
    torch.testing.assert_close(zs[1], zs[0] - cfg.shift_factor * cfg.scaling_factor)
    assert torch.equal(zs[0], zs[2])
    with torch.no_grad():
        assert not torch.equal(test.decode(zs[0]), none.decode(zs[0]))
        torch.testing.assert_close(
            test.decode(zs[0]), none.decode(zs[0] + cfg.shift_factor * cfg.scaling_factor)
        )
    with pytest.raises(CozError, match="latent_shift"):
        OSEDiffSD3.tiny(latent_shift="sometimes")


def write_released(b: OSEDiffSD3, folder, prefix: str = "", adapter: str = "default_encoder"):
    """The authors' two files: the flat up/down list and the whole fp16 encoder state dict."""
    pkl, pt = folder / "model_20001.pkl", folder / "vae_encoder_20001.pt"
    save_released_transformer_lora(b.transformer, pkl)
    state = {
        prefix + k.replace(".default_encoder.", f".{adapter}."): v.half()
        for k, v in b.vae.encoder.state_dict().items()
    }
    torch.save(state, pt)
    return pkl, pt


def test_released_format_round_trip_is_exact(images, tmp_path):
    src = OSEDiffSD3.tiny(seed=1)
    randomize_lora(src)
    with torch.no_grad():  # the release stores the encoder in fp16: make src fp16-exact first
        for p in src.vae.encoder.parameters():
            p.copy_(p.half().float())
    pkl, pt = write_released(src, tmp_path)
    flat = torch.load(pkl, weights_only=True)
    assert isinstance(flat, list) and len(flat) == 2 * len(src.lora_names)
    assert flat[0].shape == (6 * 32, 4) and flat[1].shape == (4, 32)  # up0 (out, r), down0 (r, in)

    dst = OSEDiffSD3.tiny(seed=2)
    fresh = out(dst, images)
    dst.load_released(pkl, pt)
    assert torch.equal(out(dst, images), out(src, images))
    assert not torch.equal(out(dst, images), fresh)

    # the same weights saved from a get_peft_model-wrapped VAE (other prefix and adapter name)
    pkl2, pt2 = write_released(src, tmp_path / "..", prefix="base_model.model.encoder.", adapter="default")
    other = OSEDiffSD3.tiny(seed=4)
    other.load_released(pkl2, pt2)
    assert torch.equal(out(other, images), out(src, images))


def test_our_safetensors_round_trip_is_exact(images, tmp_path):
    from safetensors import safe_open

    src = OSEDiffSD3.tiny(seed=1)
    randomize_lora(src)
    path = tmp_path / "lora.safetensors"
    src.save_lora(path)
    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all("lora_" in k for k in keys)
    assert meta["format"] == "coz-lora" and meta["backbone"] == "sd3" and meta["rank"] == "4"
    dst = OSEDiffSD3.tiny(seed=2)
    dst.load_lora(path)
    assert torch.equal(out(dst, images), out(src, images))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    src = OSEDiffSD3.tiny()
    pkl, pt = write_released(src, tmp_path)
    dst = OSEDiffSD3.tiny()
    flat = torch.load(pkl, weights_only=True)

    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    with pytest.raises(CozError, match="not a readable torch.save file"):
        dst.load_released(truncated, pt)
    short = tmp_path / "short.pkl"
    torch.save(flat[:-2], short)
    with pytest.raises(CozError, match=r"holds 4 tensors, expected 6"):
        dst.load_released(short, pt)
    swapped = tmp_path / "swapped.pkl"
    torch.save([flat[1], flat[0], *flat[2:]], swapped)  # down before up: the order is the format
    with pytest.raises(CozError, match=r"tensor 0 \(up of transformer_blocks.0.norm1.linear\) has shape"):
        dst.load_released(swapped, pt)
    as_dict = tmp_path / "dict.pkl"
    torch.save({"a": flat[0]}, as_dict)
    with pytest.raises(CozError, match="expected a list of tensors"):
        dst.load_released(as_dict, pt)

    state = torch.load(pt, weights_only=True)
    state.pop(next(k for k in state if "lora_A" in k))
    missing = tmp_path / "missing.pt"
    torch.save(state, missing)
    with pytest.raises(CozError, match="1 tensors missing"):
        dst.load_released(pkl, missing)

    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(wrong), metadata={"format": "coz-lora", "backbone": "sd21"})
    with pytest.raises(CozError, match="backbone='sd21'"):
        dst.load_lora(wrong)


def sd3_cfg(**kw):
    base = OmegaConf.load("conf/shared/backbone/sd3.yaml")
    base.seed = 0
    return OmegaConf.merge(base, kw)


def test_missing_model_or_weights_fail_fast_with_one_clear_message(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CozError, match=r"model_20001\.pkl.*vae_encoder_20001\.pt"):
        OSEDiffSD3.from_config(sd3_cfg())
    (tmp_path / "a.pkl").write_bytes(b"x")
    (tmp_path / "b.pt").write_bytes(b"x")
    with pytest.raises(CozError, match=r"backbone.vae_encoder=/no/such.pt: no such file"):
        OSEDiffSD3.from_config(sd3_cfg(transformer_lora=str(tmp_path / "a.pkl"), vae_encoder="/no/such.pt"))
    files = dict(transformer_lora=str(tmp_path / "a.pkl"), vae_encoder=str(tmp_path / "b.pt"))
    with pytest.raises(CozError) as err:
        OSEDiffSD3.from_config(sd3_cfg(model="stabilityai/stable-diffusion-3-medium-diffusers", **files))
    assert no_network == []  # failed at once, offline: no connection tried
    message = str(err.value)
    assert "stabilityai/stable-diffusion-3-medium-diffusers" in message and "HF_HUB_OFFLINE" in message
    assert "hf download" in message and "backbone.model=" in message
    with pytest.raises(CozError, match="no such folder"):
        OSEDiffSD3.from_config(sd3_cfg(model=str(tmp_path / "nowhere"), **files))


@pytest.mark.parametrize("kind", ["adain", "wavelet"])
def test_color_fixes_on_synthetic_images(kind):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    source = torch.stack([xx, yy, 0.5 * (xx + yy)])[None] * 0.6 + 0.2  # smooth colour ramps
    detail = (torch.rand(1, 3, 64, 64, generator=g) - 0.5) * 0.1
    target = (source * 0.5 + 0.4 + detail).clamp(0, 1)  # the same scene, colour-shifted, with texture
    fixed = color_fix(kind, target, source)
    assert fixed.shape == target.shape and 0 <= fixed.min() and fixed.max() <= 1
    err_before = (target.mean((2, 3)) - source.mean((2, 3))).abs().max()
    err_after = (fixed.mean((2, 3)) - source.mean((2, 3))).abs().max()
    assert err_after < 0.02 < err_before
    if kind == "adain":
        torch.testing.assert_close(fixed.std((2, 3)), source.std((2, 3)), atol=2e-3, rtol=0)
    else:  # the texture (high frequencies) survives
        finest = lambda x: (x - wavelet_blur(x, 1))[..., 2:-2, 2:-2]  # noqa: E731
        assert (finest(fixed) - finest(target)).abs().max() < 1e-3
    assert torch.equal(color_fix("none", target, source), target)


def test_wavelet_decomposition_is_exact_and_fixes_validate():
    x = torch.rand(2, 3, 40, 40)
    high, low = wavelet_decompose(x)
    torch.testing.assert_close(high + low, x)
    same = wavelet_color_fix(x, x)
    torch.testing.assert_close(same, x)
    torch.testing.assert_close(adain_color_fix(x, x), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="color_fix"):
        color_fix("sepia", x, x)


def test_zoom_cli_runs_with_tiny_sd3(compose_zoom, samples, tmp_path):
    from coz.zoom.tool import run

    cfg = compose_zoom(
        [
            "backbone=tiny_sd3",
            f"input={samples[0]}",
            "zoom.steps=1",
            "save.gif=false",
            "backbone.color_fix=wavelet",
        ]
    )
    assert cfg.backbone.seed == cfg.seed == 42
    record = run(cfg, run_dir=tmp_path)
    assert record["failed"] == {} and (tmp_path / "images" / samples[0].stem / "state_1.png").exists()


def test_output_depends_on_seed_and_image_not_on_batch_or_call_order(images):
    """Posterior noise is drawn per image from (seed, pixels): batch_size and resuming change nothing."""
    b = OSEDiffSD3.tiny(seed=5)
    randomize_lora(b)
    together = b.upscale(images, PROMPTS)
    reversed_batch = b.upscale(images.flip(0), PROMPTS[::-1]).flip(0)
    one_by_one = torch.cat([b.upscale(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, reversed_batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    other = OSEDiffSD3.tiny(seed=6)
    randomize_lora(other)
    assert not torch.allclose(other.upscale(images, PROMPTS), together, atol=1e-4)
