"""The released SD3 training recipe (issue 15; docs/fidelity.md "Training the SR backbone"): the regulariser's
x0-space loss, one DMD timestep per batch, the fake LoRA on the adaLN-zero linears, proportional
draws over concatenated lists, 8-bit rounding after the resize back, effective batch 4 in fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from inprocess_cli import run_cli
from PIL import Image
from torch import nn

from coz.train_sr.degradation import resize_back
from coz.train_sr.regulariser import FlowScore, Regulariser


class ToyFlowDenoiser(nn.Module):
    """SD3's call signature on a 1x1 channel mix: enough for the regulariser's arithmetic."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, channels)

    def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections, return_dict=False):
        out = self.proj(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return (out + timestep.view(-1, 1, 1, 1) / 1000.0,)


def regulariser(**options) -> Regulariser:
    torch.manual_seed(0)
    return Regulariser(FlowScore(ToyFlowDenoiser()), ("proj",), rank=2, **options)


COND = {"dtype": torch.float32, "prompt_embeds": None, "pooled": None}


def composed_job(args: list[str], monkeypatch, capsys) -> dict:
    """The config ``python -m coz.train_sr ARGS --cfg job`` prints (its entry point, in this process)."""
    from coz.train_sr.tool import main

    capsys.readouterr()
    assert run_cli(main, [*args, "--cfg", "job"], monkeypatch) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_x0_space_loss_is_the_sigma_squared_weighted_velocity_loss():
    z0 = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    x0_reg = regulariser(timesteps="batch", loss_space="x0")
    target_reg = regulariser(timesteps="batch", loss_space="target")
    x0_loss = x0_reg.diffusion_loss(z0, COND, torch.Generator().manual_seed(5)).detach()
    v_loss = target_reg.diffusion_loss(z0, COND, torch.Generator().manual_seed(5)).detach()
    t = x0_reg.family.sample_t(3, 0, 1000, torch.Generator().manual_seed(5), "cpu", "batch")
    sigma = float(x0_reg.family.sigma(t)[0])
    # x0 - z0 = (1 - s) z0 + s n - s v - z0 = s (n - z0 - v): the x0 loss is s^2 times the velocity loss
    assert x0_loss.item() == pytest.approx(sigma**2 * v_loss.item(), rel=1e-5)
    assert sigma < 0.999  # a real weighting, not the trivial s = 1


def test_one_dmd_timestep_per_batch_over_the_whole_schedule():
    family = FlowScore(ToyFlowDenoiser())
    g = torch.Generator().manual_seed(0)
    per_batch = torch.stack([family.sample_t(6, 0, 1000, g, "cpu", "batch") for _ in range(50)])
    assert all(len(set(row.tolist())) == 1 for row in per_batch)  # one t shared by the batch
    assert per_batch.min() < 50 and per_batch.max() > 950  # the whole schedule
    per_sample = family.sample_t(6, 0, 1000, g, "cpu", "sample")
    assert len(set(per_sample.tolist())) > 1

    reg, seen = regulariser(timesteps="batch", loss_space="x0"), []
    predict = reg.family.predict
    reg.family.predict = lambda z_t, t, cond, negative=False: seen.append(t.clone()) or predict(z_t, t, cond)
    reg.dmd_loss(torch.randn(4, 4, 5, 5), COND, torch.Generator().manual_seed(3))
    assert len(seen) == 2 and all(len(set(t.tolist())) == 1 for t in seen)  # fake and real: one t


def test_sd3_fake_lora_sits_on_the_adaln_zero_linears_with_batch_timesteps_and_x0_loss():
    from omegaconf import OmegaConf

    from coz.backbones.diffusion.lora_formats import LoRALinear
    from coz.backbones.diffusion.sd3 import OSEDiffSD3
    from coz.train_sr.generators import SD3Generator

    backbone = OSEDiffSD3.tiny()
    cfg = OmegaConf.load("conf/train_sr/train_sr.yaml").regulariser
    reg = SD3Generator(backbone).regulariser(cfg)
    adaln = [n for n, m in backbone.transformer.named_modules() if isinstance(m, LoRALinear)]
    assert reg.fake.names == adaln and all(".norm1" in n for n in adaln)
    assert (reg.timesteps, reg.loss_space, reg.dmd_t_range) == ("batch", "x0", (0, 1000))
    sigma = reg.family.sigma(torch.arange(1000))
    assert torch.equal(sigma, sigma.half().float()) and reg.family.sigma_fp16  # rounded to fp16, as released


def test_dmd_sigma_grid_is_set_timesteps_1000_and_the_transformer_gets_the_unrounded_timestep():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # the released port: scheduler.set_timesteps(1000); t = timesteps[int(1000 u)]; sigma = t / 1000
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(1000)
    released = (scheduler.timesteps / 1000).flip(0)  # ascending, as coz's t
    family = FlowScore(ToyFlowDenoiser(), shift=3.0, sigma_fp16=True)
    exact = family.exact_sigma(torch.arange(1000)).flatten()
    torch.testing.assert_close(exact, released, atol=1e-6, rtol=0)
    # end points by hand: the training grid's lowest sigma 3 s / (1 + 2 s), s = 1/1000, shifted again
    low = 3 * 0.001 / 1.002
    assert float(exact[0]) == pytest.approx(3 * low / (1 + 2 * low), abs=1e-7)  # 0.008929, not 0.0030
    assert float(exact[-1]) == pytest.approx(1.0)
    # the transformer gets t = sigma * 1000 unrounded; z_t and x0 use sigma rounded to fp16
    seen = []
    family.denoiser.forward = lambda **kw: seen.append(kw["timestep"]) or (kw["hidden_states"] * 0,)
    t = torch.tensor([1, 500])
    family.predict(torch.zeros(2, 4, 2, 2), t, COND)
    torch.testing.assert_close(seen[0], exact[t] * 1000, atol=0, rtol=0)
    assert not torch.equal(exact[t], exact[t].half().float())
    torch.testing.assert_close(family.sigma(t).flatten(), exact[t].half().float(), atol=0, rtol=0)


def test_prob_size_draws_sources_in_proportion_to_their_length(tmp_path):
    from coz.train_sr.data import TrainingImages

    for name, n in (("big", 9), ("small", 1)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    sources = [
        {"path": str(tmp_path / "big"), "prob": "size"},
        {"path": str(tmp_path / "small"), "prob": "size"},
    ]
    assert TrainingImages(sources, crop=32).probs.tolist() == pytest.approx([0.9, 0.1])
    mixed = [{"path": str(tmp_path / "big"), "prob": 1}, {"path": str(tmp_path / "small"), "prob": 1}]
    assert TrainingImages(mixed, crop=32).probs.tolist() == pytest.approx([0.5, 0.5])


def test_lr_view_is_rounded_to_8_bits_after_the_pil_like_bicubic_resize_back():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(small).resize((64, 64), Image.BICUBIC)).astype(np.float64)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    back = resize_back(x, (64, 64), "pil_bicubic", round_8bit=True)
    pixels = back[0].permute(1, 2, 0).numpy() * 255
    assert np.allclose(pixels, np.round(pixels), atol=1e-3)  # 8-bit values
    torch_bicubic = resize_back(x, (64, 64), "bicubic", round_8bit=True)[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(pixels - pil).mean() < 1.0 < np.abs(torch_bicubic - pil).mean()  # PIL's kernel, not torch's


def test_paper_preset_composes_to_effective_batch_4_in_fp32_with_the_two_stage_schedule(monkeypatch, capsys):
    cfg = composed_job(["backbone=sd3", "experiment=paper"], monkeypatch, capsys)
    effective = cfg["data"]["batch_size"] * cfg["optim"]["accumulate"] * cfg["trainer"]["devices"]
    assert effective == 4 and cfg["trainer"]["precision"] == "32-true"
    assert [s["prob"] for s in cfg["data"]["sources"]] == ["size", "size"]
    assert [s["steps"] for s in cfg["stages"]] == [25000, 20000]  # the paper's schedule stays the default
    assert cfg["degradation"]["round_8bit"] is True


# OSEDiff's initialize_unet (released train code): weight names without "bias"/"norm" that contain one
# of these patterns; the first pattern that matches files the layer by where it sits.
OSEDIFF_UNET_PATTERNS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
    "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip


def _osediff_adapter_lists(unet: nn.Module) -> dict[str, list[str]]:
    lists = {"default_encoder": [], "default_decoder": [], "default_others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(p in name for p in OSEDIFF_UNET_PATTERNS):
            continue
        if "down_blocks" in name or "conv_in" in name:
            lists["default_encoder"].append(name.replace(".weight", ""))
        elif "up_blocks" in name or "conv_out" in name:
            lists["default_decoder"].append(name.replace(".weight", ""))
        else:
            lists["default_others"].append(name.replace(".weight", ""))
    return lists


def _sd21_regulariser(**overrides):
    from omegaconf import OmegaConf

    from coz.backbones.diffusion.sd21 import OSEDiffSD21
    from coz.train_sr.generators import SD21Generator

    cfg = OmegaConf.load("conf/train_sr/train_sr.yaml").regulariser
    for key, value in overrides.items():
        cfg[key] = value
    return SD21Generator(OSEDiffSD21.tiny()).regulariser(cfg)


def test_sd21_fake_unet_trains_only_the_adapter_diffusers_leaves_active():
    from peft import LoraConfig

    from coz.backbones.tiny.sd21 import tiny_sd21_components

    # OSEDiff's fake UNet: three add_adapter calls and no set_adapter; diffusers activates the last one
    unet = tiny_sd21_components(0)["unet"]
    lists = _osediff_adapter_lists(unet)
    for adapter, targets in lists.items():
        unet.add_adapter(
            LoraConfig(r=4, init_lora_weights="gaussian", target_modules=targets), adapter_name=adapter
        )
    active = unet.active_adapters()
    assert active == ["default_others"]
    trained = sorted(n for n, m in unet.named_modules() if hasattr(m, "lora_A") and active[0] in m.lora_A)
    assert trained == sorted(lists["default_others"]) and all(n.startswith("mid_block.") for n in trained)

    assert sorted(_sd21_regulariser().fake.names) == trained  # the default: as released
    every = sorted(n for names in lists.values() for n in names)
    assert sorted(_sd21_regulariser(fake_adapters="all").fake.names) == every  # the switch: all three
    assert len(trained) < len(every) / 3


def test_sd21_generator_has_one_adamw_over_unet_lora_conv_in_and_vae_lora():
    from coz.backbones.diffusion.sd21 import OSEDiffSD21
    from coz.train_sr.generators import SD21Generator

    backbone = OSEDiffSD21.tiny()
    groups = SD21Generator(backbone).optimiser_groups()
    # OSEDiff's layers_to_opt: UNet params named "lora", all of conv_in, VAE params named "lora"
    released = [p for n, p in backbone.unet.named_parameters() if "lora" in n]
    released += list(backbone.unet.conv_in.parameters()) + [
        p for n, p in backbone.vae.named_parameters() if "lora" in n
    ]
    assert len(groups) == 1  # one optimiser, so max_grad_norm clips them jointly
    (params,) = groups.values()
    assert {id(p) for p in params} == {id(p) for p in released} and len(params) == len(set(map(id, params)))


def test_paper_osediff_preset_is_the_papers_stated_effective_batch_16_in_fp16_mixed(monkeypatch, capsys):
    # paper B.3: batch size and lr follow OSEDiff's defaults; OSEDiff's README: 4 GPUs x --train_batch_size=4,
    # --gradient_accumulation_steps=1, --mixed_precision fp16, --learning_rate=5e-5
    cfg = composed_job(["experiment=paper_osediff"], monkeypatch, capsys)
    effective = cfg["data"]["batch_size"] * cfg["optim"]["accumulate"] * cfg["trainer"]["devices"]
    assert (effective, cfg["trainer"]["precision"], cfg["optim"]["lr"]) == (4 * 4 * 1, "16-mixed", 5e-5)
    assert [s["prob"] for s in cfg["data"]["sources"]] == ["size", "size"]  # the rest is experiment=paper's
