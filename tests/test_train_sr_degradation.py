"""The Real-ESRGAN degradation: kernels and draws per item (loader), the pipeline on the device, each
image with its own draws and the diffusion view rounded once after the resize back, as released."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import default_collate

from coz.run.cli import CONFIG_DIR
from coz.train_sr.degradation import (
    add_noise,
    bicubic_degrade,
    filter2d,
    realesrgan_degrade,
    training_view,
)
from coz.train_sr.jpeg import jpeg
from coz.train_sr.kernels import KERNEL_SIZE, item_draws, resize_draws


@pytest.fixture(scope="module")
def deg() -> dict:
    return OmegaConf.to_container(OmegaConf.load(f"{CONFIG_DIR}/train_sr/degradation/realesrgan.yaml"))


@pytest.fixture(scope="module")
def many_draws(deg) -> list[dict]:
    return [item_draws(7, i, deg) for i in range(300)]


def test_config_holds_the_papers_numbers(deg):
    assert deg["first"]["resize_prob"] == [0.2, 0.7, 0.1] and deg["first"]["resize_range"] == [0.15, 1.5]
    assert deg["first"]["noise_range"] == [1, 30] and deg["second"]["noise_range"] == [1, 25]
    assert deg["second"]["resize_prob"] == [0.3, 0.4, 0.3] and deg["second"]["blur_prob"] == 0.8
    assert deg["first"]["kernel"]["kernel_prob"] == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
    assert deg["first"]["kernel"]["sigma"] == [0.2, 3.0] and deg["second"]["kernel"]["sigma"] == [0.2, 1.5]
    assert deg["final_sinc_prob"] == 0.8 and deg["scale"] == 4


def test_kernels_are_normalised_and_seeded(deg, many_draws):
    for d in many_draws[:50]:
        for key in ("kernel1", "kernel2", "sinc"):
            k = d[key]
            assert k.shape == (KERNEL_SIZE, KERNEL_SIZE)
            assert abs(float(k.sum()) - 1) < 1e-4
    again = item_draws(7, 3, deg)
    for key, value in many_draws[3].items():
        assert torch.equal(value, again[key]), key
    assert not torch.equal(item_draws(8, 3, deg)["kernel1"], again["kernel1"])


def test_draws_have_the_configured_statistics(deg, many_draws):
    def frac(key):
        return float(np.mean([float(d[key]) for d in many_draws]))

    def pulse(k):
        return float(k.max()) == 1.0

    assert abs(frac("noise1_gaussian") - 0.5) < 0.1
    assert abs(frac("noise1_gray") - 0.4) < 0.1
    assert abs(np.mean([pulse(d["kernel2"]) for d in many_draws]) - 0.2) < 0.08  # second blur prob 0.8
    assert abs(np.mean([pulse(d["sinc"]) for d in many_draws]) - 0.2) < 0.08  # final sinc prob 0.8
    sig1 = np.array([float(d["noise1_sigma"]) for d in many_draws]) * 255
    sig2 = np.array([float(d["noise2_sigma"]) for d in many_draws]) * 255
    assert sig1.min() >= 1 and sig1.max() <= 30 and sig2.max() <= 25
    q = np.array([float(d["jpeg1"]) for d in many_draws])
    assert q.min() >= 30 and q.max() <= 95 and abs(q.mean() - 62.5) < 4
    scales = np.array([float(resize_draws(7, i, deg)["scale1"]) for i in range(300)])
    assert abs(np.mean(scales > 1) - 0.2) < 0.08 and abs(np.mean(scales < 1) - 0.7) < 0.08
    assert scales.min() >= 0.15 and scales.max() <= 1.5


def test_pipeline_output_range_size_and_determinism(deg):
    torch.manual_seed(0)
    hr = torch.rand(3, 3, 64, 64)
    draws = default_collate([item_draws(1, 10 + i, deg) for i in range(3)])
    lr = realesrgan_degrade(hr, draws)
    assert lr.shape == (3, 3, 16, 16)
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, torch.round(lr * 255) / 255)  # 8-bit values
    assert torch.equal(lr, realesrgan_degrade(hr, draws))  # the draws fix everything
    other = default_collate([item_draws(2, 10 + i, deg) for i in range(3)])
    assert not torch.equal(lr, realesrgan_degrade(hr, other))


def test_each_image_is_degraded_with_its_own_draws_as_the_released_dataset(deg):
    torch.manual_seed(1)
    hr = torch.rand(3, 3, 64, 64)
    items = [item_draws(5, i, deg) for i in range(3)]
    assert len({float(d["scale1"]) for d in items}) == 3  # three different first-stage resizes
    batch = realesrgan_degrade(hr, default_collate(items))
    for i, d in enumerate(items):
        alone = realesrgan_degrade(hr[i : i + 1], default_collate([d]))
        assert torch.equal(batch[i : i + 1], alone)


def test_diffusion_view_is_rounded_once_after_the_resize_back(deg):
    torch.manual_seed(2)
    hr = torch.rand(2, 3, 64, 64)
    draws = default_collate([item_draws(3, i, deg) for i in range(2)])
    lr = realesrgan_degrade(hr, draws, round_8bit=False)
    assert not torch.equal(lr, torch.round(lr * 255) / 255)  # not rounded at 1/4 size
    # the released degrade_process(resize_bak=True): resize back, then clamp((out * 255).round(), 0, 255) / 255
    released = torch.clamp((F.interpolate(lr, size=(64, 64), mode="bilinear") * 255).round(), 0, 255) / 255
    view = training_view(hr, "realesrgan", draws, 4, "bilinear", round_8bit=True)
    torch.testing.assert_close(view, released, atol=1e-6, rtol=0)
    twice = training_view(hr, "realesrgan", draws, 4, None)  # rounded at 1/4 (what a CNN restores) ...
    twice = torch.round(F.interpolate(twice, size=(64, 64), mode="bilinear").clamp(0, 1) * 255) / 255
    assert not torch.equal(view, twice)  # ... and again after the resize back: not the release


def test_gaussian_noise_level_and_grey():
    x = torch.full((2, 3, 128, 128), 0.5)
    ones, zeros = torch.ones(2), torch.zeros(2)
    g = torch.Generator().manual_seed(0)
    sigma = torch.tensor([10 / 255, 20 / 255])
    out = add_noise(x, ones, sigma, zeros, torch.tensor([0.0, 1.0]), g)
    std = (out - x).flatten(1).std(1)
    assert torch.allclose(std, sigma, rtol=0.05)
    grey = out[1] - x[1]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[0], grey[2])


def test_filter2d_pulse_is_identity_and_per_image():
    x = torch.rand(2, 3, 20, 20)
    pulse = torch.zeros(2, 21, 21)
    pulse[:, 10, 10] = 1
    assert torch.allclose(filter2d(x, pulse), x, atol=1e-6)
    box = pulse.clone()
    box[1] = 1 / 21**2
    out = filter2d(x, box)
    assert torch.allclose(out[0], x[0], atol=1e-6) and not torch.allclose(out[1], x[1])


def test_jpeg_matches_a_real_encoder_error(samples):
    image = np.array(Image.open(samples[0]).convert("RGB"))[:128, :128]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for q in (30, 90):
        ours = jpeg(x, torch.tensor([float(q)]))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=q, subsampling=2)
        pil = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1)[None].float() / 255
        ours_err, pil_err = (ours - x).abs().mean(), (pil - x).abs().mean()
        assert abs(ours_err - pil_err) / pil_err < 0.25
        assert (ours - pil).abs().mean() < pil_err


def test_bicubic_4x():
    hr = torch.rand(2, 3, 64, 64)
    lr = bicubic_degrade(hr)
    assert lr.shape == (2, 3, 16, 16) and lr.min() >= 0 and lr.max() <= 1
    flat = torch.full((1, 3, 64, 64), 0.25)
    assert torch.allclose(bicubic_degrade(flat), torch.full((1, 3, 16, 16), round(0.25 * 255) / 255))
