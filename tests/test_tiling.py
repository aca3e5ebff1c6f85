"""Gaussian-weighted tiling (full-image SR): coverage, exactness for local functions, the tiny
SD3 VAE tiled vs untiled within a stated tolerance, and no seams at tile borders."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from coz.tiling import (
    gaussian_window,
    tile_boxes,
    tile_starts,
    tiled_apply,
)


def test_tiles_cover_the_image_with_the_requested_overlap():
    assert tile_starts(256, 64, 16) == [0, 48, 96, 144, 192]
    assert tile_starts(64, 64, 16) == [0] and tile_starts(40, 64, 16) == [0]
    starts = tile_starts(100, 64, 16)
    assert starts == [0, 36] and starts[-1] + 64 == 100  # the last tile ends at the border
    boxes = tile_boxes(256, 200, 64, 16)
    assert len(boxes) == 5 * 4 and boxes[0] == (0, 0, 64, 64) and boxes[-1] == (192, 136, 256, 200)
    with pytest.raises(ValueError):
        tile_starts(100, 16, 16)


def test_gaussian_window_is_centred_as_released_h_over_2_on_y_and_w_minus_1_over_2_on_x():
    import numpy as np

    # the released full-image script's _make_gaussian (the tiled-diffusion weights), variance 0.01:
    # x centred at (w - 1) / 2, y at h / 2, each offset divided by its own side
    h, w, var = 64, 48, 0.01
    ys = np.exp(-(((np.arange(h) - h / 2) / h) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)
    xs = np.exp(-(((np.arange(w) - (w - 1) / 2) / w) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)
    window = gaussian_window(h, w)
    torch.testing.assert_close(window, torch.from_numpy(np.outer(ys, xs)).float(), atol=1e-6, rtol=1e-6)
    assert window.min() > 0 and int(window[:, 0].argmax()) == h // 2  # one peak row: h / 2
    assert torch.equal(window, window.flip(1)) and not torch.equal(window, window.flip(0))
    assert float(window[0, 0] / window[-1, 0]) == pytest.approx(
        np.exp(-((32 / 64) ** 2 - (31 / 64) ** 2) / 0.02)
    )
    assert window[0, 0] / window[32, 23] < 1e-9  # tile corners hardly count where another tile covers them


def test_pointwise_and_upscaling_functions_are_exact():
    x = torch.rand(2, 3, 100, 80)
    calls = []

    def f(t, index):
        calls.append(index)
        return t * 2 + 1

    torch.testing.assert_close(tiled_apply(f, x, tile=32, overlap=8), x * 2 + 1)
    assert calls == list(range(len(tile_boxes(100, 80, 32, 8))))  # one call (one prompt) per tile
    up = tiled_apply(lambda t, _: F.interpolate(t, scale_factor=4, mode="nearest"), x, 32, 8, scale=4)
    torch.testing.assert_close(up, F.interpolate(x, scale_factor=4, mode="nearest"))


def test_local_convolution_matches_untiled():
    x = torch.rand(1, 3, 96, 96)
    kernel = torch.full((3, 1, 3, 3), 1 / 9)
    conv = lambda t, _=0: F.conv2d(t, kernel, padding=1, groups=3)  # noqa: E731
    tiled = tiled_apply(conv, x, tile=32, overlap=16)
    assert (tiled - conv(x)).abs().max() < 1e-3  # tile edges carry ~1e-5 of the weight


def seam_ratio(img: torch.Tensor, borders: list[int]) -> float:
    """Mean |horizontal step| at the given columns over the mean step elsewhere."""
    steps = (img[..., 1:] - img[..., :-1]).abs().mean(dim=(0, 1, 2))  # (W - 1,)
    at = torch.tensor([steps[c - 1] for c in borders])
    return float(at.mean() / steps.mean())


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_tiny_vae_tiled_matches_untiled_without_seams():
    from coz.backbones.tiny.sd3 import tiny_sd3_components

    vae = tiny_sd3_components()["vae"]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 32, 32, generator=g)
    with torch.no_grad():
        whole = vae.decode(z).sample  # (1, 3, 256, 256)
        tiled = tiled_apply(lambda t, _: vae.decode(t).sample, z, 16, 8, 8)  # latent tiles -> 8x pixels
        # GroupNorm and mid-block attention see one tile, not the whole image, so a tiled decode is
        # close to, not equal to, the whole one. Stated tolerance (random tiny VAE; measured 0.988):
        assert tiled.shape == whole.shape
        assert correlation(tiled, whole) > 0.95
        # tile borders in pixels: every place a tile starts or ends
        borders = sorted({8 * v for s in tile_starts(32, 16, 8) for v in (s, s + 16)} - {0, 256})
        assert seam_ratio(tiled, borders) < 1.5

        x = torch.rand(1, 3, 128, 128, generator=g) * 2 - 1
        enc = lambda t: vae.encode(t).latent_dist.mean  # noqa: E731
        z_tiled = tiled_apply(lambda t, _: enc(t), x, 64, 32, Fraction(1, 8))  # pixel tiles -> latents
        assert z_tiled.shape == (1, 16, 16, 16)
        assert correlation(z_tiled, enc(x)) > 0.85  # measured 0.91 with only 2x2 tiles of 64 px
