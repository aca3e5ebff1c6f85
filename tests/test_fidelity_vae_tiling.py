"""The shared-GroupNorm tiled VAE of the authors' full-image script (issue 15; implementation-facts.md
section 3): on a tiny VAE it is close to the untiled encode/decode, far closer than independent tiles."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from coz.backbones.diffusion.vae_tiling import core_boxes, shared_norm_decode, shared_norm_encode
from coz.backbones.tiny.parts import tiny_vae
from coz.tiling import tiled_apply


@pytest.fixture(scope="module")
def vae_and_image():
    torch.manual_seed(0)
    vae = tiny_vae(16, 1.5305, 0.0609).eval()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    x = torch.stack([torch.sin(3 * xx), torch.cos(4 * yy), xx * yy]).unsqueeze(0)  # (1, 3, 128, 128)
    return vae, x


def test_cores_cover_the_image_once_on_the_latent_grid():
    boxes = core_boxes(200, 136, 64, 8)
    covered = torch.zeros(200, 136)
    for t, le, b, r in boxes:
        covered[t:b, le:r] += 1
        assert all(v % 8 == 0 or v in (200, 136) for v in (t, le, b, r))
    assert torch.all(covered == 1)


@torch.no_grad()
def test_shared_statistics_encode_is_close_to_untiled_and_far_closer_than_independent_tiles(vae_and_image):
    vae, x = vae_and_image
    untiled = vae.encode(x).latent_dist.mean
    shared = shared_norm_encode(vae, x, tile=64, pad=32).chunk(2, dim=1)[0]  # 4 tiles
    independent = tiled_apply(lambda t, _: vae.encode(t).latent_dist.mean, x, 64, 16, Fraction(1, 8))
    err_shared = (shared - untiled).abs().mean().item()
    err_independent = (independent - untiled).abs().mean().item()
    assert err_shared < 0.2 * err_independent, (err_shared, err_independent)
    one_tile = shared_norm_encode(vae, x, tile=1024, pad=32).chunk(2, dim=1)[0]
    torch.testing.assert_close(one_tile, untiled, atol=1e-4, rtol=0)  # one tile: exactly the VAE


@torch.no_grad()
def test_shared_statistics_decode_is_close_to_untiled_and_far_closer_than_independent_tiles(vae_and_image):
    vae, x = vae_and_image
    z = vae.encode(x).latent_dist.mean  # (1, 16, 16, 16)
    untiled = vae.decode(z).sample
    shared = shared_norm_decode(vae, z, tile=8, pad=4)  # 4 tiles
    independent = tiled_apply(lambda t, _: vae.decode(t).sample, z, 8, 2, 8)
    err_shared = (shared - untiled).abs().mean().item()
    err_independent = (independent - untiled).abs().mean().item()
    assert err_shared < 0.5 * err_independent, (err_shared, err_independent)


def test_zoom_full_defaults_to_the_shared_statistics_vae(compose_zoom):
    from coz.full_image import FullImageOptions

    options = FullImageOptions.from_config(compose_zoom(["zoom=full", "input=x.png"]).zoom)
    assert (options.vae_tiling, options.vae_encoder_pad, options.vae_decoder_pad) == ("shared_norm", 32, 11)
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
