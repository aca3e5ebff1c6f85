"""OSEDiff-SD2.1 (``backbone=sd21``) through its tiny offline twin: the one DDPM step, LoRA placement
(the authors' rules) and trainability, the release's osediff.pkl and our safetensors, determinism,
clear errors, and the CLI end to end."""

from __future__ import annotations

import pytest
import torch
from inprocess_cli import run_cli
from omegaconf import OmegaConf

from coz.backbones.diffusion.osediff_pkl import (
    LIST_KEYS,
    RELEASE_KEYS,
    UNET_ADAPTERS,
    inject_osediff_lora,
    osediff_unet_targets,
    osediff_vae_targets,
)
from coz.backbones.diffusion.sd21 import OSEDiffSD21
from coz.backbones.tiny.sd21 import TEXT_DIM, tiny_sd21_components
from coz.errors import CozError

PROMPTS = ["a cat on a sofa", "brick wall, window"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g)  # (B, 3, H, W): 8x8 latents


@pytest.fixture(scope="module")
def src(images) -> tuple[OSEDiffSD21, torch.Tensor]:
    """A tiny model with every trainable tensor random, and its output on ``images``."""
    model = OSEDiffSD21.tiny(seed=1)
    randomize(model)
    return model, out(model, images)


def randomize(backbone: OSEDiffSD21, seed: int = 0) -> None:
    """Random values in every trainable tensor: the LoRA (zero-initialised Bs too) and conv_in."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backbone.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def out(backbone: OSEDiffSD21, images: torch.Tensor, seed: int = 7) -> torch.Tensor:
    backbone.reseed(seed)
    return backbone.upscale(images, PROMPTS)


def test_one_step_forward_shape_dtype_range(images):
    b = OSEDiffSD21.tiny()
    assert b.takes_upsampled_input and b.scale == 4 and b.color_fix == "adain"
    y = b.upscale(images, PROMPTS)
    assert y.shape == images.shape and y.dtype == torch.float32 and not y.requires_grad
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.std() > 0
    embeds = b.encode_prompt(PROMPTS)
    assert embeds.shape == (2, 77, TEXT_DIM) and not torch.equal(embeds[0], embeds[1])
    with pytest.raises(ValueError, match="multiples of 8"):
        b.upscale(torch.rand(1, 3, 60, 64), PROMPTS[:1])


def test_the_step_is_ddpm_scheduler_step_from_t999():
    """Our closed form is the authors' ``scheduler.step(eps, 999, z)`` after ``set_timesteps(1)``:
    with diffusers 0.25 the step from 999 goes to t = -1 (alpha_prev = 1), i.e. to x0. Current
    diffusers looks 999 up in the schedule, so we give it [999] explicitly for the same step. The
    step adds sqrt(1e-20) * noise on top, hence the tolerance."""
    b = OSEDiffSD21.tiny()
    g = torch.Generator().manual_seed(1)
    z, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    b.scheduler.set_timesteps(timesteps=[999])
    assert b.scheduler.previous_timestep(999) == -1
    reference = b.scheduler.step(eps, 999, z, generator=g).prev_sample
    torch.testing.assert_close(b.denoise(z, eps), reference, atol=1e-5, rtol=1e-5)
    a = b.scheduler.alphas_cumprod[999]
    torch.testing.assert_close(b.denoise(z, eps), (z - (1 - a).sqrt() * eps) / a.sqrt())


def test_lora_layout_follows_the_authors_rules():
    b = OSEDiffSD21.tiny()
    enc, dec, oth = (b.unet_targets[a] for a in UNET_ADAPTERS)
    assert "conv_in" in enc and all(n == "conv_in" or n.startswith("down_blocks.") for n in enc)
    assert "conv_out" in dec and all(n == "conv_out" or n.startswith("up_blocks.") for n in dec)
    assert oth and all(n.startswith("mid_block.") for n in oth)
    every = {*enc, *dec, *oth}
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0" in every
    assert "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj" in every
    assert not any("time_emb" in n or "norm" in n for n in every)
    # the VAE list repeats a name once per pattern it contains, as the authors' loop does
    assert b.vae_targets.count("quant_conv") == 10 and "post_quant_conv" not in b.vae_targets
    assert b.vae_targets.count("encoder.conv_in") == 2  # "conv_in" and "conv"
    assert all(n == "quant_conv" or n.startswith("encoder.") for n in b.vae_targets)

    from peft.tuners.lora import LoraLayer

    layers = {n: m for n, m in b.unet.named_modules() if isinstance(m, LoraLayer)}
    assert set(layers) == every
    for name, layer in layers.items():  # all three adapters active, scale alpha / r = 8 / 4
        (adapter,) = layer.lora_A.keys()
        assert name in b.unet_targets[adapter] and adapter in layer.active_adapters
        assert layer.scaling[adapter] == 2.0 and layer.r[adapter] == 4


def test_lora_layout_on_sd21_base_architecture():
    """The same rules on SD2.1-base's own shapes (meta tensors: no memory, no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
        )
        unet_targets, vae_targets = osediff_unet_targets(unet), osediff_vae_targets(vae)
        assert (unet_targets, vae_targets) == inject_osediff_lora(unet, vae, 4, 4)
    assert [len(unet_targets[a]) for a in UNET_ADAPTERS] == [94, 148, 16]
    assert (len(vae_targets), len(set(vae_targets))) == (65, 32)
    unet_lora = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
    vae_lora = sum(p.numel() for n, p in vae.named_parameters() if "lora_" in n)
    assert (unet_lora, vae_lora) == (4_055_712, 369_356)


def test_only_lora_and_conv_in_are_trainable_and_get_gradients(images, src):
    frozen, _ = src
    modules = [frozen.unet, frozen.vae, frozen.text_encoder]
    assert not any(p.requires_grad for m in modules for p in m.parameters())

    b = OSEDiffSD21.tiny(trainable=True)
    named = {
        f"{i}.{n}": p for i, m in enumerate([b.unet, b.vae, b.text_encoder]) for n, p in m.named_parameters()
    }
    trainable = {n for n, p in named.items() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert trainable - lora == {"0.conv_in.base_layer.weight", "0.conv_in.base_layer.bias"}
    n_layers = len({n for a in UNET_ADAPTERS for n in b.unet_targets[a]}) + len(set(b.vae_targets))
    assert len(lora) == 2 * n_layers
    assert {id(p) for p in b.trainable_parameters()} == {id(named[n]) for n in trainable}

    y, z0 = b.restore(images * 2 - 1, PROMPTS)
    assert z0.shape == (2, 4, 8, 8)
    y.square().mean().backward()
    ups = [p for n, p in b.unet.named_parameters() if ".lora_B." in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)
    assert b.unet.conv_in.base_layer.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in b.text_encoder.parameters())


def test_same_seed_same_output_other_seed_other_output(images):
    a, b = OSEDiffSD21.tiny(seed=3), OSEDiffSD21.tiny(seed=3)
    randomize(a)
    randomize(b)
    assert torch.equal(out(a, images), out(b, images))
    assert not torch.equal(out(a, images, seed=7), out(a, images, seed=8))


def test_output_depends_on_seed_and_image_not_on_batch_or_call_order(images):
    b = OSEDiffSD21.tiny(seed=5)
    randomize(b)
    together = b.upscale(images, PROMPTS)
    reversed_batch = b.upscale(images.flip(0), PROMPTS[::-1]).flip(0)
    one_by_one = torch.cat([b.upscale(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, reversed_batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)


def test_color_fix_option(images):
    none, adain = OSEDiffSD21.tiny(color_fix="none"), OSEDiffSD21.tiny(color_fix="adain")
    raw, fixed = out(none, images), out(adain, images)
    err = lambda y: (y.mean((2, 3)) - images.mean((2, 3))).abs().max()  # noqa: E731
    assert err(fixed) < 0.01 < err(raw)
    with pytest.raises(CozError, match="color_fix"):
        OSEDiffSD21.tiny(color_fix="sepia")


def test_released_osediff_pkl_round_trip_is_exact(images, src, tmp_path):
    model, expected = src
    pkl = tmp_path / "osediff.pkl"
    model.save_released(pkl)

    raw = torch.load(pkl, map_location="cpu", weights_only=True)  # the official layout, exactly
    assert set(raw) == set(RELEASE_KEYS) and raw["rank_unet"] == raw["rank_vae"] == 4
    plain_vae = tiny_sd21_components()["vae"]  # the authors' loop runs before any LoRA exists
    assert raw["vae_lora_encoder_modules"] == osediff_vae_targets(plain_vae)
    for adapter, key in LIST_KEYS.items():
        assert raw[key] == model.unet_targets[adapter]
    unet_keys, vae_keys = set(raw["state_dict_unet"]), set(raw["state_dict_vae"])
    assert {"conv_in.base_layer.weight", "conv_in.base_layer.bias"} <= unet_keys
    assert "down_blocks.0.resnets.0.conv1.lora_A.default_encoder.weight" in unet_keys
    assert "up_blocks.1.attentions.0.proj_in.lora_B.default_decoder.weight" in unet_keys
    assert "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.default_others.weight" in unet_keys
    assert all("lora" in k or "conv_in" in k for k in unet_keys)
    assert {
        "quant_conv.lora_A.default_encoder.weight",
        "encoder.conv_in.lora_B.default_encoder.weight",
    } <= vae_keys
    assert all("lora" in k for k in vae_keys)

    fresh = OSEDiffSD21.tiny(seed=9)
    assert not torch.equal(out(fresh, images), expected)
    fresh.load_released(pkl)
    assert torch.equal(out(fresh, images), expected)

    cfg = tiny_cfg(osediff_pkl=str(pkl), seed=9)  # the config route
    assert torch.equal(out(OSEDiffSD21.from_config(cfg), images), expected)


def test_release_ranks_come_from_the_file(images, tmp_path):
    small = OSEDiffSD21.tiny(seed=1, lora_rank=2, vae_lora_rank=8)
    randomize(small)
    pkl = tmp_path / "osediff.pkl"
    small.save_released(pkl)
    loaded = OSEDiffSD21.from_config(tiny_cfg(osediff_pkl=str(pkl)))
    assert (loaded.lora_rank, loaded.vae_lora_rank) == (2, 8)
    assert torch.equal(out(loaded, images), out(small, images))
    with pytest.raises(CozError, match=r"ranks unet 2 / vae 8.*built with 4 / 4"):
        OSEDiffSD21.tiny().load_released(pkl)


def test_our_safetensors_round_trip_is_exact(images, src, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model, expected = src
    path = tmp_path / "lora.safetensors"
    model.save_lora(path)
    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith(("unet.", "vae.")) and ("lora_" in k or "conv_in" in k) for k in keys)
    assert meta["format"] == "coz-lora" and meta["backbone"] == "sd21" and meta["rank"] == "4"
    via_config = OSEDiffSD21.from_config(tiny_cfg(weights=str(path), seed=2))
    assert torch.equal(out(via_config, images), expected)

    sd3_file = tmp_path / "sd3.safetensors"
    save_file({"x": torch.zeros(1)}, str(sd3_file), metadata={"format": "coz-lora", "backbone": "sd3"})
    with pytest.raises(CozError, match="backbone='sd3'.*'sd21'"):
        via_config.load_lora(sd3_file)


def test_bad_osediff_pkl_gives_one_clear_error(src, tmp_path):
    dst, _ = src
    pkl = tmp_path / "osediff.pkl"
    dst.save_released(pkl)
    raw = torch.load(pkl, weights_only=True)

    def check(data, match: str, name: str):
        path = tmp_path / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            torch.save(data, path)
        with pytest.raises(CozError, match=match) as err:
            dst.load_released(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
        return message

    check(pkl.read_bytes()[: pkl.stat().st_size // 2], "not a readable torch.save file", "truncated.pkl")
    check(b"not a checkpoint at all", "not a readable torch.save file", "text.pkl")
    check([torch.zeros(1)], "expected a dict", "list.pkl")  # e.g. the SD3 release's model_20001.pkl
    check({k: v for k, v in raw.items() if k != "state_dict_vae"}, "lacks state_dict_vae", "nokey.pkl")
    check({**raw, "rank_unet": "4"}, "rank_unet should be a positive int", "rank.pkl")
    check({**raw, "unet_lora_others_modules": "mid_block"}, "should be a list", "names.pkl")
    check({**raw, "state_dict_unet": {}}, "state_dict_unet should be a non-empty dict", "empty.pkl")

    unet = dict(raw["state_dict_unet"])
    unet.pop("conv_in.base_layer.weight")
    check(
        {**raw, "state_dict_unet": unet}, r"state_dict_unet does not match.*1 tensors missing", "missing.pkl"
    )
    vae = dict(raw["state_dict_vae"])
    key = "quant_conv.lora_A.default_encoder.weight"
    vae[key] = torch.zeros(3, 8, 1, 1)
    check(
        {**raw, "state_dict_vae": vae},
        rf"state_dict_vae does not match this model: {key} has shape \(3, 8, 1, 1\)",
        "shape.pkl",
    )
    others = [*raw["unet_lora_others_modules"], "mid_block.attentions.0.proj_extra"]
    check({**raw, "unet_lora_others_modules": others}, "names other modules", "modules.pkl")


def sd21_cfg(**kw):
    base = OmegaConf.load("conf/shared/backbone/sd21.yaml")
    base.seed = 0
    return OmegaConf.merge(base, kw)


def tiny_cfg(**kw):
    base = OmegaConf.load("conf/shared/backbone/tiny_sd21.yaml")
    base.seed = 0
    return OmegaConf.merge(base, kw)


def test_configs_compose_with_the_documented_defaults(compose_zoom):
    for name in ("sd21", "tiny_sd21"):
        cfg = compose_zoom([f"backbone={name}", "input=x.png"]).backbone
        assert cfg.name == name and cfg.color_fix == "adain" and cfg.prompt_format == "osediff"
        assert cfg.dtype == ("auto" if name == "sd21" else "float32")  # auto: fp16 on GPUs, as OSEDiff's test
        assert cfg.seed == 42 and cfg.osediff_pkl is None and cfg.weights is None


def test_missing_model_or_weights_fail_fast_with_one_clear_message(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CozError, match=r"needs OSEDiff weights.*backbone\.osediff_pkl=.*osediff\.pkl"):
        OSEDiffSD21.from_config(sd21_cfg())
    with pytest.raises(CozError, match=r"backbone.osediff_pkl=/no/such.pkl: no such file"):
        OSEDiffSD21.from_config(sd21_cfg(osediff_pkl="/no/such.pkl"))
    pkl = tmp_path / "osediff.pkl"
    OSEDiffSD21.tiny().save_released(pkl)
    with pytest.raises(CozError) as err:
        OSEDiffSD21.from_config(sd21_cfg(osediff_pkl=str(pkl)))
    assert no_network == []  # failed at once, offline: no connection tried
    message = str(err.value)
    assert "stabilityai/stable-diffusion-2-1-base" in message and "HF_HUB_OFFLINE" in message
    assert "hf download" in message and "backbone.model=" in message
    with pytest.raises(CozError, match="no such folder"):
        OSEDiffSD21.from_config(sd21_cfg(model=str(tmp_path / "nowhere"), osediff_pkl=str(pkl)))


@pytest.mark.slow  # a fresh Python process: ~10 s of imports and model building
def test_zoom_cli_runs_with_tiny_sd21(samples, tmp_path, monkeypatch, capsys):
    """``python -m coz.zoom backbone=tiny_sd21 ...``: its command line, through its entry point."""
    from coz.zoom.tool import main

    run_dir = tmp_path / "run"
    args = ["backbone=tiny_sd21", f"input={samples[0]}", "zoom.steps=1", "zoom.size=128"]
    status = run_cli(main, [*args, "save.gif_size=64", f"hydra.run.dir={run_dir}"], monkeypatch)
    assert status == 0, capsys.readouterr().err[-2000:]
    image_dir = run_dir / "images" / samples[0].stem
    assert (image_dir / "state_1.png").exists() and (image_dir / "zoom.json").exists()


def test_loads_a_local_diffusers_folder_like_the_real_model(images, src, tmp_path):
    """The ``backbone=sd21`` path (load_sd21_parts) on a diffusers folder of the tiny parts."""
    import json

    model, expected = src
    folder = tmp_path / "sd21"
    parts = tiny_sd21_components()
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        parts[sub].save_pretrained(folder / sub)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    pkl = tmp_path / "osediff.pkl"
    model.save_released(pkl)
    loaded = OSEDiffSD21.from_config(sd21_cfg(model=str(folder), osediff_pkl=str(pkl), seed=3))
    assert loaded.base_model == str(folder) and loaded.name == "osediff-sd21"
    assert torch.equal(out(loaded, images), expected)

    (folder / "unet" / "config.json").unlink()
    with pytest.raises(CozError, match=r"backbone.model=.*could not load SD2.1"):
        OSEDiffSD21.from_config(sd21_cfg(model=str(folder), osediff_pkl=str(pkl)))


def test_reduced_precision_runs(images):
    b = OSEDiffSD21.tiny(dtype="bfloat16")
    assert b.unet.dtype == b.vae.dtype == b.text_encoder.dtype == torch.bfloat16
    y = b.upscale(images, PROMPTS)
    assert y.dtype == torch.float32 and y.isfinite().all() and 0 <= y.min() and y.max() <= 1
    mixed = OSEDiffSD21.tiny(dtype="bfloat16", text_dtype="float32")
    assert mixed.text_encoder.dtype == torch.float32 and mixed.encode_prompt(PROMPTS).dtype == torch.bfloat16
