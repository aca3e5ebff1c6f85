"""S3Diff (``backbone=s3diff``) through its tiny offline twin: the degradation-guided one step, LoRA
layout against PEFT's, trainability, the release's s3diff.pkl / de_net.pth and our safetensors, CFG,
the estimator's influence, determinism, clear errors and the CLI."""

from __future__ import annotations

import pytest
import torch
from inprocess_cli import run_cli
from omegaconf import OmegaConf
from PIL import Image

from coz.backbones.diffusion.s3diff import NEGATIVE_PROMPT, POSITIVE_PROMPT, S3Diff
from coz.backbones.diffusion.s3diff_lora import (
    RELEASE_KEYS,
    UNET_LORA_TARGETS,
    VAE_LORA_TARGETS,
    DeModLoRA,
    demod_layers,
    inject_demod_lora,
    unet_block,
    vae_block,
)
from coz.backbones.seeded import seeded
from coz.errors import CozError

PROMPTS = ["a cat on a sofa", "brick wall, window"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny models are far faster on one thread, above all on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g)  # (B, 3, H, W): 8x8 latents


@pytest.fixture(scope="module")
def low_res(images) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=16, mode="bicubic", antialias=True).clamp(0, 1)


def randomize(b: S3Diff, seed: int = 0, estimator: bool = False) -> S3Diff:
    """Random values for every adapter tensor (LoRA ups start at zero), optionally a fresh estimator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in b.adapter_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    if estimator:
        with seeded(seed):
            b.estimator.init_weights(1.0)
    return b


def out(b: S3Diff, images, low_res, prompts=PROMPTS, seed: int = 7) -> torch.Tensor:
    b.reseed(seed)
    return b.upscale(images, prompts, low_res=low_res)


def test_one_step_forward_shape_dtype_range(images, low_res):
    b = randomize(S3Diff.tiny())
    assert b.takes_upsampled_input and b.wants_low_res and b.scale == 4 and b.pad_multiple == 64
    y = out(b, images, low_res)
    assert y.shape == images.shape and y.dtype == torch.float32 and not y.requires_grad
    assert 0.0 <= y.min() and y.max() <= 1.0 and y.std() > 0
    odd = b.upscale(images[:, :, :40, :56], PROMPTS)  # reflect-padded to 64 and cropped; no low_res
    assert odd.shape == (2, 3, 40, 56)


def test_bfloat16_runs_and_returns_the_input_dtype(images, low_res):
    half = randomize(S3Diff.tiny(dtype="bfloat16"))
    assert all(p.dtype == torch.bfloat16 for m in half.modules() for p in m.parameters())
    y = half.upscale(images, PROMPTS, low_res=low_res)
    assert y.dtype == torch.float32 and y.shape == images.shape and torch.isfinite(y).all()


def test_lora_layout_and_math_match_the_authors_peft_adapters():
    """Same module names, keys and shapes as PEFT's adapters with the authors' configs; with an
    identity de_mod a layer computes exactly PEFT's LoRA (alpha 8, scale 8/r)."""
    from peft import LoraConfig, inject_adapter_in_model

    from coz.backbones.tiny.s3diff import tiny_s3diff_components

    ref, ours = tiny_s3diff_components(0), tiny_s3diff_components(0)
    inject_adapter_in_model(
        LoraConfig(r=8, init_lora_weights="gaussian", target_modules=list(UNET_LORA_TARGETS)), ref["unet"]
    )
    inject_adapter_in_model(
        LoraConfig(r=4, init_lora_weights="gaussian", target_modules=VAE_LORA_TARGETS),
        ref["vae"],
        adapter_name="vae_skip",
    )
    inject_demod_lora(ours["unet"], UNET_LORA_TARGETS, 8, "default", "unet")
    inject_demod_lora(ours["vae"], VAE_LORA_TARGETS, 4, "vae_skip", "vae")
    for part in ("unet", "vae"):
        theirs = {k: v.shape for k, v in ref[part].state_dict().items()}
        assert {k: v.shape for k, v in ours[part].state_dict().items()} == theirs
    assert all(n.startswith("encoder.") for n, m in ours["vae"].named_modules() if isinstance(m, DeModLoRA))

    g = torch.Generator().manual_seed(0)
    for name, x in (
        ("down_blocks.0.resnets.0.conv1", (2, 8, 6, 6)),
        ("mid_block.attentions.0.proj_in", (2, 5, 16)),
    ):
        peft_layer, layer = ref["unet"].get_submodule(name), ours["unet"].get_submodule(name)
        with torch.no_grad():
            for p in peft_layer.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        layer.load_state_dict(peft_layer.state_dict())
        inputs = torch.randn(x, generator=g)
        layer.de_mod = torch.eye(8).expand(2, 8, 8)
        torch.testing.assert_close(layer(inputs), peft_layer(inputs))


def test_block_numbering_follows_the_authors():
    assert [unet_block(n) for n in ("down_blocks.2.resnets.0.conv1", "mid_block.attentions.0.proj_in")] == [
        2,
        4,
    ]
    assert unet_block("up_blocks.3.attentions.1.proj_out") == 8 and unet_block("conv_out") == -1
    assert vae_block("encoder.down_blocks.1.resnets.0.conv2") == 1
    assert vae_block("encoder.mid_block.attentions.0.to_q") == -2 and vae_block("encoder.conv_in") == -1
    b = S3Diff.tiny()
    assert {layer.block for layer in demod_layers(b.unet)} == {*range(9), -1}
    assert {layer.block for layer in demod_layers(b.vae)} == {0, 1, 2, 3, -2, -1}


def test_modulation_is_the_fourier_mlp_construction():
    b = randomize(S3Diff.tiny())
    m = b.modulation
    scores = torch.tensor([[0.2, 0.7], [0.9, 0.1]])
    vae, unet = m(scores)
    assert vae.shape == (2, 6, 4, 4) and unet.shape == (2, 10, 8, 8)
    proj = scores[..., None] * m.W[None, None] * 2 * torch.pi  # (B, 2, 64)
    proj = torch.cat([proj.sin(), proj.cos()], -1)
    fourier = torch.cat([proj[:, 0], proj[:, 1]], -1)  # (B, 256)
    de, blocks = m.unet_de_mlp(fourier), m.unet_block_mlp(m.unet_block_embeddings.weight)
    expected = m.unet_fuse_mlp(torch.cat([de[:, None].repeat(1, 10, 1), blocks[None].repeat(2, 1, 1)], -1))
    torch.testing.assert_close(unet, expected.reshape(2, 10, 8, 8))


def test_only_adapters_are_trainable_and_get_gradients(images, low_res):
    frozen = S3Diff.tiny()
    assert not any(p.requires_grad for m in frozen.modules() for p in m.parameters())

    b = S3Diff.tiny(trainable=True)
    trainable = {id(p) for m in b.modules() for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in b.adapter_parameters()}
    names = {n for n, p in b.unet.named_parameters() if p.requires_grad}
    assert names == {n for n in names if "lora_" in n or n.startswith("conv_in.")}
    assert len(names) == 2 * len(b.unet_lora_names) + 2
    assert not any(p.requires_grad for p in [*b.estimator.parameters(), *b.text_encoder.parameters()])
    assert not b.modulation.W.requires_grad
    with torch.no_grad():  # make the modulation non-trivial so gradients reach every part
        for p in b.adapter_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    y, _ = b.restore(images * 2 - 1, PROMPTS, low_res)
    y.square().mean().backward()
    checked = [
        b.unet.get_submodule(b.unet_lora_names[0]).lora_B["default"].weight,
        b.vae.get_submodule(b.vae_lora_names[0]).lora_B["vae_skip"].weight,
        b.unet.conv_in.weight,
        b.modulation.unet_fuse_mlp.weight,
        b.modulation.vae_de_mlp[0].weight,
        b.modulation.unet_block_embeddings.weight,
    ]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in checked)


def test_the_estimator_sees_low_res_and_steers_the_output(images, low_res):
    b = randomize(S3Diff.tiny())
    other = torch.rand(low_res.shape, generator=torch.Generator().manual_seed(3))
    assert (b.degradation(low_res) - b.degradation(other)).abs().max() > 0.01
    base = out(b, images, low_res)
    assert torch.equal(out(b, images, low_res), base)
    assert (out(b, images, other) - base).abs().max() > 1e-3
    # without low_res the view itself is downsampled (antialiased bicubic) for the estimator (and,
    # with no crop to upsample, the view is what is restored)
    b.input_resize = "view"
    torch.testing.assert_close(b.upscale(images, PROMPTS), out(b, images, low_res), atol=1e-6, rtol=0)


def test_by_default_s3diff_restores_its_own_bilinear_upsampling_of_the_crop(images, low_res):
    """S3Diff's inference script (and its training) feeds the model the low-res crop upsampled 4x
    bilinearly, align_corners=False; input_resize=view restores the chain's bicubic view instead."""
    b = randomize(S3Diff.tiny())
    assert b.input_resize == "bilinear"
    bilinear = torch.nn.functional.interpolate(low_res, size=64, mode="bilinear", align_corners=False)
    own = out(b, images, low_res)
    b.input_resize = "view"
    assert (out(b, images, low_res) - own).abs().max() > 1e-3  # the view is not what was restored
    b.reseed(7)
    same = b.upscale(bilinear, PROMPTS, low_res=low_res)
    b.reseed(7)
    b.input_resize = "bilinear"  # the posterior noise follows the view passed in: pass the same one
    torch.testing.assert_close(b.upscale(bilinear, PROMPTS, low_res=low_res), same, atol=1e-6, rtol=0)
    with pytest.raises(CozError, match="input_resize='nearest'"):
        S3Diff.tiny(input_resize="nearest")


def test_cfg_between_the_step_prompt_and_the_negative_prompt(images, low_res):
    b = randomize(S3Diff.tiny())
    seen = []
    b.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"]), with_kwargs=True
    )
    out(b, images, low_res)
    (embeds,) = seen
    assert embeds.shape[0] == 4  # positive and negative in one UNet batch
    torch.testing.assert_close(embeds[:2], b.encode_prompt(PROMPTS))
    torch.testing.assert_close(embeds[2:], b._encode_text([NEGATIVE_PROMPT] * 2))
    # an empty prompt (prompt=null) falls back to the authors' fixed positive prompt
    torch.testing.assert_close(b.encode_prompt(["", " "]), b._encode_text([POSITIVE_PROMPT] * 2))
    assert not torch.allclose(out(b, images, low_res, ["", ""]), out(b, images, low_res))

    vae_mods, unet_mods = b.modulation(b.degradation(low_res))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pos, neg = b.encode_prompt(PROMPTS), b._encode_text([NEGATIVE_PROMPT] * 2)
    with torch.no_grad():
        guided = b.predict_noise(z, unet_mods, pos, neg)
        e_pos, e_neg = b.predict_noise(z, unet_mods, pos), b.predict_noise(z, unet_mods, neg)
    torch.testing.assert_close(guided, e_neg + 1.07 * (e_pos - e_neg), atol=1e-5, rtol=0)


def test_one_step_is_the_ddpm_scheduler_step_from_999():
    b = S3Diff.tiny()
    sched = b.scheduler
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [999]
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    step = sched.step(eps, 999, z, generator=g).prev_sample  # adds 1e-10 * noise
    torch.testing.assert_close(b.denoise(z, eps), step, atol=1e-6, rtol=1e-6)


def write_release(b: S3Diff, folder):
    pkl, de_net = folder / "s3diff.pkl", folder / "de_net.pth"
    b.save_released(pkl, de_net)
    return pkl, de_net


def test_release_files_have_the_authors_layout_and_round_trip_exactly(images, low_res, tmp_path):
    src = randomize(S3Diff.tiny(seed=1), seed=5, estimator=True)
    pkl, de_net = write_release(src, tmp_path)
    sd = torch.load(pkl, weights_only=True)
    assert set(sd) == set(RELEASE_KEYS)
    assert sd["unet_lora_target_modules"] == list(UNET_LORA_TARGETS)
    assert sd["vae_lora_target_modules"] == VAE_LORA_TARGETS and (sd["rank_unet"], sd["rank_vae"]) == (8, 4)
    unet_keys, vae_keys = list(sd["state_dict_unet"]), list(sd["state_dict_vae"])
    assert {"conv_in.weight", "conv_in.bias"} <= set(unet_keys)
    assert all(
        ".lora_A.default." in k or ".lora_B.default." in k or k.startswith("conv_in.") for k in unet_keys
    )
    assert all(k.startswith("encoder.") and ".lora_" in k and ".vae_skip." in k for k in vae_keys)
    assert sd["state_dict_unet"]["down_blocks.0.resnets.0.conv1.lora_A.default.weight"].shape == (8, 8, 3, 3)
    assert set(sd["state_dict_unet_de_mlp"]) == {"0.weight", "0.bias"} and sd["state_dict_unet_de_mlp"][
        "0.weight"
    ].shape == (256, 256)
    assert set(sd["state_dict_vae_fuse_mlp"]) == {"weight", "bias"} and sd["state_dict_vae_fuse_mlp"][
        "weight"
    ].shape == (16, 320)
    assert isinstance(sd["w"], torch.nn.Parameter) and sd["w"].shape == (64,)
    assert sd["state_embeddings"]["state_dict_unet_block"]["weight"].shape == (10, 64)
    assert sd["state_embeddings"]["state_dict_vae_block"]["weight"].shape == (6, 64)
    est = torch.load(de_net, weights_only=True)
    assert {"conv_first.0.weight", "body.1.3.weight", "fc_degree.1.2.weight"} <= set(est)

    dst = S3Diff.tiny(seed=2)
    fresh = out(dst, images, low_res)
    dst.load_released(pkl, de_net)
    assert torch.equal(out(dst, images, low_res), out(src, images, low_res))
    assert not torch.equal(out(dst, images, low_res), fresh)

    cfg = tiny_cfg(pretrained_path=str(pkl), de_net_path=str(de_net))
    assert torch.equal(out(S3Diff.from_config(cfg), images, low_res), out(src, images, low_res))


def test_our_safetensors_round_trip_is_exact(images, low_res, tmp_path):
    from safetensors import safe_open

    src = randomize(S3Diff.tiny(seed=1))
    path = tmp_path / "s3diff.safetensors"
    src.save_lora(path)
    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["format"] == "coz-lora" and meta["backbone"] == "s3diff" and meta["rank_unet"] == "8"
    assert "de_mod.W" in keys and not any(k.startswith("estimator") for k in keys)
    assert all(k.startswith(("unet.", "vae.", "de_mod.")) for k in keys)
    dst = S3Diff.from_config(tiny_cfg(weights=str(path), seed=3))
    assert torch.equal(out(dst, images, low_res), out(src, images, low_res))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    src = S3Diff.tiny()
    pkl, de_net = write_release(src, tmp_path)
    sd = torch.load(pkl, weights_only=True)
    dst = S3Diff.tiny()

    def saved(name: str, obj):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    with pytest.raises(
        CozError, match=r"S3Diff weights .*truncated.pkl: cannot load it \(not a readable torch.save file"
    ):
        dst.load_released(truncated)
    with pytest.raises(CozError, match="expected a dict"):
        dst.load_released(saved("list.pkl", [1, 2]))
    with pytest.raises(CozError, match="missing state_dict_vae, w"):
        dst.load_released(
            saved("partial.pkl", {k: v for k, v in sd.items() if k not in ("state_dict_vae", "w")})
        )
    lora = dict(sd["state_dict_unet"])
    lora.pop(next(k for k in lora if "lora_B" in k))
    with pytest.raises(CozError, match=r"state_dict_unet does not match this model: 1 tensors missing"):
        dst.load_released(saved("missing.pkl", {**sd, "state_dict_unet": lora}))
    fuse = {**sd["state_dict_unet_fuse_mlp"], "weight": torch.zeros(9, 320)}
    with pytest.raises(
        CozError, match=r"state_dict_unet_fuse_mlp does not match this model: weight has shape \(9, 320\)"
    ):
        dst.load_released(saved("shape.pkl", {**sd, "state_dict_unet_fuse_mlp": fuse}))
    with pytest.raises(CozError, match=r"ranks unet 8 / vae 4, but the model was built with 16 / 4"):
        S3Diff.tiny(lora_rank_unet=16).load_released(pkl)

    cut = tmp_path / "cut.pth"
    cut.write_bytes(de_net.read_bytes()[:100])
    with pytest.raises(
        CozError, match=r"degradation estimator .*cut.pth: cannot load it \(not a readable torch.save file"
    ):
        dst.load_estimator(cut)
    est = torch.load(de_net, weights_only=True)
    est["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CozError, match="keys do not match S3Diff's DEResNet: 0 tensors missing.*1 unexpected"
    ):
        dst.load_estimator(saved("extra.pth", est))
    with pytest.raises(CozError, match=r"estimator .*s3diff.pkl: not a state dict.*that is an s3diff.pkl"):
        dst.load_estimator(pkl)  # the two files swapped

    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(1)}, str(wrong), metadata={"format": "coz-lora", "backbone": "sd3"})
    with pytest.raises(CozError, match="backbone='sd3'"):
        dst.load_lora(wrong)


def s3diff_cfg(**kw):
    base = OmegaConf.load("conf/shared/backbone/s3diff.yaml")
    base.seed = 0
    return OmegaConf.merge(base, kw)


def tiny_cfg(**kw):
    base = OmegaConf.load("conf/shared/backbone/tiny_s3diff.yaml")
    base.seed = 0
    return OmegaConf.merge(base, kw)


def test_missing_model_or_weights_fail_fast_with_one_clear_message(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(CozError, match=r"s3diff\.pkl.*de_net\.pth"):
        S3Diff.from_config(s3diff_cfg())
    (tmp_path / "s3diff.pkl").write_bytes(b"x")
    (tmp_path / "de_net.pth").write_bytes(b"x")
    with pytest.raises(CozError, match=r"backbone.de_net_path=/no/such.pth: no such file"):
        S3Diff.from_config(
            s3diff_cfg(pretrained_path=str(tmp_path / "s3diff.pkl"), de_net_path="/no/such.pth")
        )
    files = dict(pretrained_path=str(tmp_path / "s3diff.pkl"), de_net_path=str(tmp_path / "de_net.pth"))
    with pytest.raises(CozError) as err:
        S3Diff.from_config(s3diff_cfg(**files))
    assert no_network == []  # failed at once, offline: no connection tried
    message = str(err.value)
    assert "stabilityai/sd-turbo" in message and "HF_HUB_OFFLINE" in message and "backbone.model=" in message
    with pytest.raises(CozError, match="no such folder"):
        S3Diff.from_config(s3diff_cfg(model=str(tmp_path / "nowhere"), **files))


def test_output_depends_on_seed_and_image_not_on_batch(images, low_res):
    """Posterior noise is drawn per image from (seed, pixels): batch_size and resuming change nothing."""
    b = randomize(S3Diff.tiny(seed=5), estimator=True)
    together = b.upscale(images, PROMPTS, low_res=low_res)
    reversed_batch = b.upscale(images.flip(0), PROMPTS[::-1], low_res=low_res.flip(0)).flip(0)
    one_by_one = torch.cat(
        [b.upscale(images[i : i + 1], PROMPTS[i : i + 1], low_res=low_res[i : i + 1]) for i in range(2)]
    )
    torch.testing.assert_close(together, reversed_batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    b.reseed(6)
    assert not torch.allclose(b.upscale(images, PROMPTS, low_res=low_res), together, atol=1e-4)


def test_zoom_cli_runs_with_tiny_s3diff(samples, tmp_path, monkeypatch, capsys):
    """``python -m coz.zoom backbone=tiny_s3diff ...``: its command line, through its entry point."""
    from coz.zoom.tool import main

    small = tmp_path / "small.png"
    Image.open(samples[0]).convert("RGB").resize((96, 80)).save(small)
    run_dir = tmp_path / "run"
    args = ["backbone=tiny_s3diff", f"input={small}", "zoom.steps=1", "zoom.size=128", "threads=1"]
    status = run_cli(main, [*args, "save.gif_size=64", f"hydra.run.dir={run_dir}"], monkeypatch)
    assert status == 0, capsys.readouterr().err[-2000:]
    state = Image.open(run_dir / "images" / "small" / "state_1.png")
    assert state.size == (128, 128)
    assert (run_dir / "run.json").exists()
