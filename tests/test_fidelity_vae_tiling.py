"""The tiled VAE of the authors' full-image script (issues 15 and 26; docs/fidelity.md, "OSEDiff-SD3
inference and full-image SR"): VAEHook's tile split, its no-tiling threshold and its fast mode (every
GroupNorm's statistics taken once from a copy shrunk to the tile size), each checked against the
released arithmetic worked by hand or against diffusers' own encoder with its GroupNorms pinned; the
exact shared statistics (``shared_norm``) stay close to the untiled VAE."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from coz.backbones.diffusion.vae_tiling import (
    core_boxes,
    encoder_steps,
    estimate_statistics,
    needs_tiles,
    shrunk_copy,
    tiled_decode,
    tiled_encode,
)
from coz.backbones.tiny.parts import tiny_vae
from coz.tiling import tiled_apply


@pytest.fixture(scope="module")
def vae_and_image():
    torch.manual_seed(0)
    vae = tiny_vae(16, 1.5305, 0.0609).eval()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    x = torch.stack([torch.sin(3 * xx), torch.cos(4 * yy), xx * yy]).unsqueeze(0)  # (1, 3, 128, 128)
    return vae, x


def test_core_boxes_split_as_vaehook():
    # VAEHook: n = ceil((side - 2 pad) / tile); tile ceil((side - 2 pad) / n) rounded up to a multiple
    # of 32 that fits; cores start at pad + j * tile, the first from 0, the last to the side.
    # Decoder, 256 latents, tile 128, pad 11: n = ceil(234 / 128) = 2, ceil(234 / 2) = 117 -> 128.
    assert core_boxes(256, 256, 128, 11) == [
        (0, 0, 139, 139),
        (0, 139, 139, 256),
        (139, 0, 256, 139),
        (139, 139, 256, 256),
    ]
    # Encoder, 1600 x 2048 px, tile 1024, pad 32: rows n = 2, ceil(1536 / 2) = 768 (already x32) ->
    # cut at 800; columns n = 2, 992 (x32) -> cut at 1024.
    assert core_boxes(1600, 2048, 1024, 32) == [
        (0, 0, 800, 1024),
        (0, 1024, 800, 2048),
        (800, 0, 1600, 1024),
        (800, 1024, 1600, 2048),
    ]
    # 3 tiles of 300 latents: n = ceil(278 / 128) = 3, ceil(278 / 3) = 93 -> 96: cuts 107, 203.
    assert [b[2] for b in core_boxes(300, 10, 128, 11)] == [107, 203, 300]
    for h, w in ((200, 136), (1100, 3000), (151, 160)):
        covered = torch.zeros(h, w)
        for t, le, b, r in core_boxes(h, w, 64, 8):
            covered[t:b, le:r] += 1
        assert torch.all(covered == 1)


def test_no_tiling_up_to_tile_plus_two_pads(vae_and_image):
    assert not needs_tiles(1088, 1088, 1024, 32) and needs_tiles(1096, 8, 1024, 32)  # encoder
    assert not needs_tiles(150, 150, 128, 11) and needs_tiles(151, 150, 128, 11)  # decoder
    vae, x = vae_and_image
    small = x[..., :80, :80]  # 80 <= 64 + 2 x 8: the plain encoder, exactly
    with torch.no_grad():
        assert torch.equal(tiled_encode(vae, small, tile=64, pad=8), vae.encoder(small))


def _group_norm_inputs(net: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-group (mean, biased variance) of every GroupNorm's input in a plain forward of ``net``."""
    seen = []

    def record(module, args):
        grouped = args[0].reshape(module.num_groups, -1)
        seen.append((grouped.mean(1), grouped.var(1, unbiased=False)))

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, nn.GroupNorm)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def _pinned_forward(net: nn.Module, x: torch.Tensor, stats: list) -> torch.Tensor:
    """``net(x)`` with its GroupNorms, in call order, using the given statistics."""
    calls = iter(stats)

    def pin(module, args, out):
        mean, var = next(calls)
        grouped = args[0].reshape(1, module.num_groups, -1)
        y = ((grouped - mean.view(1, -1, 1)) / torch.sqrt(var.view(1, -1, 1) + module.eps)).reshape_as(
            args[0]
        )
        shape = (1, -1) + (1,) * (args[0].dim() - 2)
        return y * module.weight.view(shape) + module.bias.view(shape)

    hooks = [m.register_forward_hook(pin) for m in net.modules() if isinstance(m, nn.GroupNorm)]
    with torch.no_grad():
        out = net(x)
    for h in hooks:
        h.remove()
    return out


def test_shrunk_copy_is_the_released_nearest_exact_copy_with_channel_statistics_restored(vae_and_image):
    _, x = vae_and_image  # 128 px, tile 64: scale 1/2, nearest-exact reads source pixel 2i + 1
    pick = x[..., 1::2, 1::2]
    std, mean = torch.std_mean(x, dim=(0, 2, 3), keepdim=True)  # unbiased, as torch.std_mean
    expected = (pick - pick.mean((0, 2, 3), keepdim=True)) / pick.std((0, 2, 3), keepdim=True) * std + mean
    expected = expected.clamp(x.min(), x.max())
    torch.testing.assert_close(shrunk_copy(x, 64), expected, atol=1e-6, rtol=0)


def test_fast_statistics_are_those_of_the_shrunk_copy_through_the_plain_encoder(vae_and_image):
    vae, x = vae_and_image
    small = shrunk_copy(x, 64)
    with torch.no_grad():
        ours = estimate_statistics(encoder_steps(vae.encoder), small)
    plain = _group_norm_inputs(vae.encoder, small)
    assert len(ours) == len(plain) > 10
    for (m, v), (pm, pv) in zip(ours, plain, strict=True):
        torch.testing.assert_close(m, pm, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v, pv, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_fast_mode_is_each_padded_tile_through_the_plain_net_with_the_shrunk_copys_statistics(
    vae_and_image, part
):
    vae, x = vae_and_image
    with torch.no_grad():
        if part == "encoder":
            net, source, tile, pad, scale = vae.encoder, x, 64, 8, Fraction(1, 8)  # cores 0-72-128 px
        else:
            z = vae.encode(x).latent_dist.mean
            z = z if vae.post_quant_conv is None else vae.post_quant_conv(z)
            net, source, tile, pad, scale = vae.decoder, z, 8, 2, 8  # 16 latents: cores 0-10-16
        stats = _group_norm_inputs(net, shrunk_copy(source, tile))
        expected = None
        for top, left, bottom, right in core_boxes(*source.shape[-2:], tile, pad):
            pt, pl = max(0, top - pad), max(0, left - pad)
            piece = source[..., pt : bottom + pad, pl : right + pad]
            y = _pinned_forward(net, piece, stats)
            if expected is None:
                h, w = source.shape[-2:]
                expected = y.new_zeros(1, y.shape[1], int(h * scale), int(w * scale))
            expected[..., int(top * scale) : int(bottom * scale), int(left * scale) : int(right * scale)] = y[
                ...,
                int((top - pt) * scale) : int((bottom - pt) * scale),
                int((left - pl) * scale) : int((right - pl) * scale),
            ]
        if part == "encoder":
            ours = tiled_encode(vae, x, tile, pad, "fast")
            expected = vae.quant_conv(expected) if vae.quant_conv is not None else expected
        else:
            ours = tiled_decode(vae, vae.encode(x).latent_dist.mean, tile, pad, "fast")
    assert len(core_boxes(*source.shape[-2:], tile, pad)) == 4
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_shared_statistics_encode_is_close_to_untiled_and_far_closer_than_independent_tiles(vae_and_image):
    vae, x = vae_and_image
    untiled = vae.encode(x).latent_dist.mean
    shared = tiled_encode(vae, x, tile=48, pad=32, statistics="shared_norm").chunk(2, dim=1)[
        0
    ]  # cores 0-64-128
    independent = tiled_apply(lambda t, _: vae.encode(t).latent_dist.mean, x, 64, 16, Fraction(1, 8))
    err_shared = (shared - untiled).abs().mean().item()
    err_independent = (independent - untiled).abs().mean().item()
    assert err_shared < 0.2 * err_independent, (err_shared, err_independent)
    one_tile = tiled_encode(vae, x, tile=1024, pad=32, statistics="shared_norm").chunk(2, dim=1)[0]
    torch.testing.assert_close(one_tile, untiled, atol=1e-4, rtol=0)  # one tile: exactly the VAE


@torch.no_grad()
def test_shared_statistics_decode_is_close_to_untiled_and_far_closer_than_independent_tiles(vae_and_image):
    vae, x = vae_and_image
    z = vae.encode(x).latent_dist.mean  # (1, 16, 16, 16)
    untiled = vae.decode(z).sample
    shared = tiled_decode(vae, z, tile=8, pad=2, statistics="shared_norm")  # 4 tiles
    independent = tiled_apply(lambda t, _: vae.decode(t).sample, z, 8, 2, 8)
    err_shared = (shared - untiled).abs().mean().item()
    err_independent = (independent - untiled).abs().mean().item()
    assert err_shared < 0.5 * err_independent, (err_shared, err_independent)


def test_zoom_full_defaults_to_the_released_fast_mode_vae(compose_zoom):
    from coz.full_image import FullImageOptions

    options = FullImageOptions.from_config(compose_zoom(["zoom=full", "input=x.png"]).zoom)
    assert (options.vae_tiling, options.vae_encoder_pad, options.vae_decoder_pad) == ("fast", 32, 11)
    with pytest.raises(ValueError, match="zoom.vae_tiling='gaussian'"):
        FullImageOptions(vae_tiling="gaussian")


def test_full_image_vlm_context_is_the_original_input_at_every_step():
    import numpy as np
    from PIL import Image

    from coz.backbones.interp import Interpolation
    from coz.chain import ZoomChain
    from coz.full_image import FullImageOptions, context_copy
    from coz.prompts.base import PromptExtractor

    class Recorder(PromptExtractor):
        def __init__(self):
            self.previous = []

        def extract(self, views, previous):
            self.previous += previous
            return [""] * len(views)

    rng = np.random.default_rng(0)
    x0 = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    for context in ("input", "current"):
        prompter = Recorder()
        opts = FullImageOptions(pixel_tile=64, pixel_overlap=8, context=context)
        ZoomChain("full", Interpolation("nearest"), prompter, steps=2, size=32, full=opts).run([x0])
        assert {p.size for p in prompter.previous} == {(53, 32)}  # short side zoom.size
        same = [np.array_equal(np.asarray(p), np.asarray(context_copy(x0, 32))) for p in prompter.previous]
        assert all(same) if context == "input" else not all(same)  # step 2 sees the 4x image's copy


def test_sd3_tile_views_are_the_vae_decode_of_the_tile_latent_and_the_latents_are_reused():
    import dataclasses

    import numpy as np
    from PIL import Image

    from coz.backbones.diffusion.sd3 import OSEDiffSD3
    from coz.full_image import FullImageOptions, super_resolve_full
    from coz.prompts.base import PromptExtractor

    class Recorder(PromptExtractor):
        def __init__(self):
            self.views = []

        def extract(self, views, previous):
            self.views += views
            return [""] * len(views)

    backbone = OSEDiffSD3.tiny()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    decoded, upsampled = Recorder(), Recorder()
    options = FullImageOptions(latent_tile=16, latent_overlap=4)  # 4x: 256x192 px, 32x24 latents
    a = super_resolve_full(backbone, decoded, image, options, size=32)
    assert backbone._encoded_full is None  # the cached latents were used once and dropped
    b = super_resolve_full(
        backbone, upsampled, image, dataclasses.replace(options, tile_view="upsampled"), size=32
    )
    assert len(decoded.views) == len(a.tiles) > 1
    for (top, left, bottom, right), view, crop in zip(a.tiles, decoded.views, upsampled.views, strict=True):
        assert view.size == crop.size == (right - left, bottom - top)
        assert np.array_equal(np.asarray(crop), np.asarray(a.view.crop((left, top, right, bottom))))
        assert not np.array_equal(np.asarray(view), np.asarray(crop))  # the VAE's reconstruction instead
    assert np.array_equal(np.asarray(a.state), np.asarray(b.state))  # same latents, same result
