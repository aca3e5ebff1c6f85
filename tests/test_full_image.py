"""Full-image SR (``zoom=full``): the tile grid, one prompt per tile, the generic pixel-tiled path
(exact for pointwise backbones), the SD3 latent-tiled path (one tile = the untiled path; several
tiles agree with it within a stated tolerance and leave no seams), sizes, outputs and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from coz.backbones.base import Backbone
from coz.backbones.diffusion.sd3 import OSEDiffSD3
from coz.backbones.interp import Interpolation
from coz.chain import ZoomChain
from coz.errors import CozError
from coz.full_image import FullImageOptions, context_copy, pil_to_uint8, prepare_full_x0
from coz.geometry import to_tensor
from coz.images import ImageInputError
from coz.prompts.base import NullPrompt, PromptExtractor
from coz.tiling import tile_starts
from coz.viz import full_animation, full_strip
from coz.zoom.tool import run

SMALL = FullImageOptions(pixel_tile=32, pixel_overlap=8, latent_tile=16, latent_overlap=4)


class RecordingPrompts(PromptExtractor):
    name = "recording"

    def __init__(self):
        self.calls = []

    def extract(self, views, previous):
        start = sum(len(v) for v, _ in self.calls)
        self.calls.append((views, previous))
        return [f"tile {start + i}" for i in range(len(views))]


class RecordingBackbone(Backbone):
    """Nearest 4x (or identity on the upsampled input) that remembers every call."""

    def __init__(self, upsampled: bool = False, low_res: bool = False) -> None:
        self.takes_upsampled_input, self.wants_low_res = upsampled, low_res
        self.name = "recording"
        self.calls: list[tuple[torch.Tensor, list[str], torch.Tensor | None]] = []

    def upscale(self, images, prompts, low_res=None):
        self.calls.append((images.clone(), list(prompts), low_res))
        if self.takes_upsampled_input:
            return images
        return torch.nn.functional.interpolate(images, scale_factor=4, mode="nearest-exact")


@pytest.fixture(scope="module")
def small(samples) -> Image.Image:
    """A 120x80 photo: several 32-px tiles, fast."""
    return Image.open(samples[1]).convert("RGB").resize((120, 80), Image.LANCZOS)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def starts_to_borders(size: int, tile: int, overlap: int, unit: int) -> list[int]:
    """Every pixel column where a tile starts or ends (not the image edges)."""
    return sorted(
        {unit * v for s in tile_starts(size, tile, overlap) for v in (s, s + tile)} - {0, unit * size}
    )


def seam_ratio(img: torch.Tensor, borders: list[int], window: int = 8) -> float:
    """Mean |horizontal step| across the given columns over the mean step of the ``window``
    columns either side: a seam is a local jump (about 1 where there is none)."""
    steps = (img[..., 1:] - img[..., :-1]).abs().mean(dim=(0, 1, 2))  # (W - 1,): step c-1 -> c
    ratios = []
    for c in borders:
        around = torch.cat([steps[c - 1 - window : c - 1], steps[c : c + window]])
        ratios.append(steps[c - 1] / around.mean())
    return float(torch.stack(ratios).mean())


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


# ---- the tile grid and the prompts ---------------------------------------------------------------
def test_pixel_and_latent_backbones_share_the_default_grid(sd3):
    opts = FullImageOptions()
    generic = RecordingBackbone().full_image_tiles(300, 448, opts)
    latent = sd3.full_image_tiles(300, 448, opts)
    assert generic == latent  # 512-px tiles overlapping by 128 px of the output, either way
    assert len(generic) == 3 * 5 and generic[0] == (0, 0, 512, 512) and generic[-1] == (688, 1280, 1200, 1792)


@pytest.mark.parametrize("multiscale", [True, False])
def test_one_prompt_per_tile_from_its_view_and_the_whole_image(small, multiscale):
    prompter, backbone = RecordingPrompts(), RecordingBackbone()
    opts = FullImageOptions(pixel_tile=32, pixel_overlap=8, prompt_batch=5, multiscale=multiscale)
    zoom = ZoomChain("full", backbone, prompter, steps=1, size=64, full=opts).run([small])[0]
    step = zoom.steps[0]
    n = len(step.tiles)
    assert n == len(tile_starts(80, 32, 8)) * len(tile_starts(120, 32, 8)) == 3 * 5
    assert len(step.tile_prompts) == n == len(backbone.calls)  # prompt count = tile count
    assert [len(v) for v, _ in prompter.calls] == [5, 5, 5]  # in batches of prompt_batch
    up = small.resize((480, 320), Image.LANCZOS)
    assert np.array_equal(arr(step.view), arr(up))
    views = [v for vs, _ in prompter.calls for v in vs]
    for i, ((top, left, bottom, right), view) in enumerate(zip(step.tiles, views, strict=True)):
        assert np.array_equal(arr(view), arr(up.crop((left, top, right, bottom))))  # the tile's view
        assert backbone.calls[i][1] == [f"tile {i}"]  # ... and that tile's own prompt
    previous = [p for _, ps in prompter.calls for p in ps]
    if multiscale:  # AR-2: a copy of the whole image, short side zoom.size, with every view
        assert all(p.size == (96, 64) for p in previous)
        assert np.array_equal(arr(previous[0]), arr(context_copy(small, 64)))
    else:
        assert previous == [None] * n
    assert step.prompt.splitlines() == step.tile_prompts


def test_generic_path_is_exact_for_pointwise_backbones(small):
    """Nearest 4x and identity are pointwise: Gaussian blending of the tiles changes nothing."""
    x0 = small.crop((0, 0, 60, 40))
    nearest = ZoomChain("full", Interpolation("nearest"), NullPrompt(), steps=2, full=SMALL).run([x0])[0]
    assert [s.size for s in nearest.states] == [(60, 40), (240, 160), (960, 640)]
    expected = x0.resize((960, 640), Image.NEAREST)
    assert np.array_equal(arr(nearest.states[-1]), arr(expected))
    assert nearest.steps[1].prompt == ""  # null prompts: no text

    identity = RecordingBackbone(upsampled=True)
    zoom = ZoomChain("full", identity, NullPrompt(), steps=1, full=SMALL).run([small])[0]
    assert np.array_equal(arr(zoom.states[1]), arr(small.resize((480, 320), Image.LANCZOS)))
    assert {tuple(c[0].shape[-2:]) for c in identity.calls} == {(128, 128)}  # 4 x pixel_tile


def test_low_res_tiles_go_with_upsampled_tiles(small):
    backbone = RecordingBackbone(upsampled=True, low_res=True)
    ZoomChain("full", backbone, NullPrompt(), steps=1, full=SMALL).run([small])
    lr = to_tensor([small])
    for (top, left, bottom, right), (_, _, low_res) in zip(
        backbone.full_image_tiles(80, 120, SMALL), backbone.calls, strict=True
    ):
        assert torch.equal(low_res, lr[..., top // 4 : bottom // 4, left // 4 : right // 4])


# ---- the SD3 latent-tiled path ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sd3() -> OSEDiffSD3:
    b = OSEDiffSD3.tiny(latent_shift="none")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero LoRA: the transformer step really changes the latents
        for p in b.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return b


def full_sd3(b: OSEDiffSD3, image: Image.Image, opts: FullImageOptions, prompts=None):
    up = image.resize((image.width * 4, image.height * 4), Image.LANCZOS)
    tiles = b.full_image_tiles(image.height, image.width, opts)
    prompts = prompts or [f"tile {i}" for i in range(len(tiles))]
    with torch.inference_mode():
        return b.upscale_full(pil_to_uint8(image), pil_to_uint8(up), prompts, opts), up, tiles


def test_sd3_one_tile_is_the_untiled_path(sd3, small):
    image = small.crop((0, 0, 64, 64))
    whole = FullImageOptions(latent_tile=64, vae_encoder_tile=1024, vae_decoder_tile=128)
    out, up, tiles = full_sd3(sd3, image, whole, prompts=["a cat"])
    assert len(tiles) == 1
    untiled = sd3.upscale(to_tensor([up]), ["a cat"])
    torch.testing.assert_close(out, untiled, atol=1e-5, rtol=0)


def test_sd3_tiled_agrees_with_untiled_without_seams(sd3, samples):
    image = Image.open(samples[0]).convert("RGB").resize((96, 96), Image.LANCZOS)  # 48x48 latents
    opts = FullImageOptions(
        latent_tile=32,
        latent_overlap=8,
        vae_encoder_tile=256,
        vae_encoder_overlap=64,
        vae_decoder_tile=32,
        vae_decoder_overlap=8,
    )  # 2x2 tiles at every stage
    texts, steps = [], []
    encode_prompt, predict_velocity = sd3.encode_prompt, sd3.predict_velocity
    sd3.encode_prompt = lambda prompts: texts.append(list(prompts)) or encode_prompt(prompts)
    sd3.predict_velocity = lambda z, *a: steps.append(tuple(z.shape)) or predict_velocity(z, *a)
    try:
        full_sd3(sd3, image, opts, prompts=[f"tile {i}" for i in range(4)])
        assert texts == [[f"tile {i}"] for i in range(4)]  # each tile's transformer step: its prompt
        texts.clear()
        tiled, up, tiles = full_sd3(sd3, image, opts, prompts=["a face"] * 4)
        assert texts == [["a face"]]  # a prompt shared by neighbouring tiles is embedded once
    finally:
        del sd3.encode_prompt, sd3.predict_velocity
    assert len(tiles) == 4 and steps == [(1, 16, 32, 32)] * 8  # one 32-latent tile at a time
    x = to_tensor([up])
    untiled = sd3.upscale(x, ["a face"])
    sd3.reseed(43)
    other_noise = sd3.upscale(x, ["a face"])
    sd3.reseed(42)
    # Stated tolerance: tiling changes the output no more than redrawing the VAE posterior noise
    # does. (The random tiny model's output is dominated by that noise; measured: tiled vs
    # untiled correlation 0.315, mean |diff| 0.136; two noise draws 0.311 and 0.134.)
    assert correlation(tiled, untiled) > correlation(other_noise, untiled) - 0.05
    assert (tiled - untiled).abs().mean() < 1.1 * (other_noise - untiled).abs().mean()
    # no seams: the steps across every tile border (encoder, latent-step and decoder tiles all
    # start at px 128 and end at 256) are like their neighbours'. Measured 1.07 and 1.03 (the
    # untiled output: 0.97); tiles that merely abut give 1.5.
    borders = starts_to_borders(48, 32, 8, 8)
    for img in (tiled, tiled.transpose(-1, -2)):
        assert seam_ratio(img, borders) < 1.2


@pytest.mark.slow
def test_realesrgan_tiled_agrees_with_untiled_without_seams(samples):
    """Real weights, a local network: pixel tiles blend back to the untiled result."""
    from coz.backbones.cnn.realesrgan import RealESRGAN

    backbone = RealESRGAN.from_config()
    # 48 px: the fewest pixels that still make 2x2 overlapping tiles with 8 clean columns either
    # side of every border (each pixel costs a realesrgan forward three times here)
    image = Image.open(samples[0]).convert("RGB").resize((48, 48), Image.LANCZOS)
    up = image.resize((192, 192), Image.LANCZOS)
    with torch.inference_mode():
        untiled = backbone.upscale(to_tensor([image]), [""])
        opts = FullImageOptions(pixel_tile=32, pixel_overlap=16)  # 2x2 tiles
        tiled = backbone.upscale_full(pil_to_uint8(image), pil_to_uint8(up), [""] * 4, opts)
        hard = FullImageOptions(pixel_tile=24, pixel_overlap=0)  # 2x2 tiles that do not overlap
        seamed = backbone.upscale_full(pil_to_uint8(image), pil_to_uint8(up), [""] * 4, hard)
    # stated tolerance (measured: correlation 0.9989, mean |diff| 0.008)
    assert correlation(tiled, untiled) > 0.998 and (tiled - untiled).abs().mean() < 0.01
    borders = starts_to_borders(48, 32, 16, 4)
    assert borders == [64, 128]
    for img, ref in ((tiled, untiled), (tiled.transpose(-1, -2), untiled.transpose(-1, -2))):
        assert (
            seam_ratio(img, borders) < seam_ratio(ref, borders) + 0.1
        )  # measured 0.71 vs 0.74, 0.88 vs 0.88
    assert seam_ratio(seamed, [96]) > 2  # the measure does see seams: 3.2 where tiles just abut


# ---- sizes, options, outputs, CLI -------------------------------------------------------------
def test_x0_is_the_input_trimmed_to_multiples_of_4_and_huge_outputs_are_refused():
    img = Image.new("RGB", (451, 302), (10, 20, 30))
    x0, notes = prepare_full_x0(img, FullImageOptions(), steps=1)
    assert x0.size == (448, 300) and "trimmed" in notes[0]
    x0, notes = prepare_full_x0(img, FullImageOptions(input_size=100), steps=1)
    assert x0.size == (148, 100) and "resized" in notes[0]  # 149x100, trimmed to 148
    with pytest.raises(ImageInputError, match="max_output_pixels"):
        prepare_full_x0(img, FullImageOptions(), steps=4)  # 115712x77312
    with pytest.raises(ImageInputError, match="too small"):
        prepare_full_x0(Image.new("RGB", (3, 50)), FullImageOptions(), steps=1)
    with pytest.raises(ValueError, match="overlap"):
        FullImageOptions(latent_tile=16, latent_overlap=16)
    with pytest.raises(ValueError, match="latent_shift"):
        FullImageOptions(latent_shift="sometimes")
    with pytest.raises(ValueError, match="multiples of 4"):
        ZoomChain("full", Interpolation("nearest"), NullPrompt()).run([img])


def test_config_defaults_match_the_authors_script(compose_zoom):
    cfg = compose_zoom(["zoom=full", "input=x.png"])
    assert cfg.zoom.mode == "full" and cfg.zoom.steps == 1
    opts = FullImageOptions.from_config(cfg.zoom)
    assert (opts.latent_tile, opts.latent_overlap, opts.tile_variance) == (64, 16, 0.01)
    assert (opts.vae_encoder_tile, opts.vae_decoder_tile, opts.latent_shift) == (1024, 128, "none")
    assert opts == FullImageOptions()
    keep = FullImageOptions.from_config(compose_zoom(["zoom=full", "zoom.latent_shift=backbone"]).zoom)
    assert keep.latent_shift is None


def test_bad_full_options_fail_before_any_model_loads(compose_zoom, samples, tmp_path):
    cfg = compose_zoom([f"input={samples[0]}", "zoom=full", "backbone=sd3", "zoom.latent_overlap=64"])
    with pytest.raises(CozError, match="latent_overlap=64"):  # sd3 would fail on its missing weights
        run(cfg, tmp_path)


def test_full_strip_and_animation():
    states = [Image.new("RGB", (60, 40), "red"), Image.new("RGB", (240, 160), "blue")]
    strip = full_strip(states)
    assert strip.size == (60 + 2 * (40 + 8), 40 + 20)
    assert strip.getpixel((60 + 8 + 20, 20)) == (255, 0, 0)  # x1's detail
    assert strip.getpixel((60 + 8 + 48 + 20, 20)) == (0, 0, 255)  # x4's detail
    frames = full_animation(states, size=32, frames_per_step=4)
    assert len(frames) == 4 + 1 + 2 * 2 and all(f.size == (32, 32) for f in frames)


def test_cli_full_mode_writes_whole_states(compose_zoom, small, tmp_path):
    src = tmp_path / "in" / "cat.png"
    src.parent.mkdir()
    small.crop((0, 0, 66, 50)).save(src)
    overrides = [f"input={src}", "zoom=full", "zoom.pixel_tile=32", "zoom.pixel_overlap=8"]
    record = run(
        compose_zoom([*overrides, "backbone=bicubic", "zoom.steps=2", "save.gif_size=32"]), tmp_path / "r"
    )
    counts = [len(tile_starts(h, 32, 8)) * len(tile_starts(w, 32, 8)) for w, h in ((64, 48), (256, 192))]
    assert record["finished"] == ["cat"] and record["images"]["cat"]["tiles"] == counts == [6, 88]
    folder = tmp_path / "r" / "images" / "cat"
    sizes = [Image.open(folder / f"state_{i}.png").size for i in range(3)]
    assert sizes == [(64, 48), (256, 192), (1024, 768)]  # trimmed to multiples of 4, then 4x a step
    assert Image.open(folder / "input_2.png").size == (1024, 768)
    assert Image.open(tmp_path / "r" / "scales" / "x16" / "cat.png").size == (1024, 768)
    meta = json.loads((folder / "zoom.json").read_text())
    assert meta["full"] and meta["sizes"][2] == [1024, 768] and len(meta["tiles"][1]) == 88
    assert "trimmed" in meta["notes"][0]
    assert Image.open(folder / "strip.png").height == 48 + 20 and (folder / "zoom.gif").exists()

    # tiny SD3 with the tiny VLM: latent tiles of 8 (overlap 2) on the 32x24 latents of 256x192
    sd3_overrides = ["backbone=tiny_sd3", "prompt=tiny_vlm", "zoom.latent_tile=8", "zoom.latent_overlap=2"]
    record = run(compose_zoom([*overrides, *sd3_overrides, "save.gif=false"]), tmp_path / "s")
    n = len(tile_starts(24, 8, 2)) * len(tile_starts(32, 8, 2))
    assert record["images"]["cat"]["tiles"] == [n] == [20]
    meta = json.loads((tmp_path / "s" / "images" / "cat" / "zoom.json").read_text())
    assert len(meta["tile_prompts"][0]) == len(meta["tiles"][0]) == n
    assert Image.open(tmp_path / "s" / "images" / "cat" / "state_1.png").size == (256, 192)
