"""Chain and x0 promises checked against arithmetic written here: the official center box at sizes
other than 512, onestep's AR-1 prompts, x0 exactly filled (no 511-px strip of black), and the
thin-image path resampling with LANCZOS like the direct one."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from coz.backbones.base import Backbone
from coz.chain import ZoomChain
from coz.geometry import center_box
from coz.images import prepare_x0
from coz.prompts.base import PromptExtractor


def test_center_box_is_the_official_arithmetic_at_odd_sizes():
    # official: side = size // factor; box = ((size - side) // 2, ..., (size + side) // 2)
    # 510 / 4: side 127 -> (191, 318); a box from half sides (510 // 8 = 63 around 255) gives (192, 318)
    assert center_box(510, 4) == (191, 191, 318, 318)
    # 100 / 3: side 33 -> (33, 66); half sides (16 around 50) would give (34, 66)
    assert center_box(100, 3) == (33, 33, 66, 66)


class _Nearest(Backbone):
    name = "nearest-4x"

    def upscale(self, images, prompts):
        return torch.nn.functional.interpolate(images, scale_factor=4, mode="nearest-exact")


class _Recording(PromptExtractor):
    name = "recording"

    def __init__(self):
        self.previous = []

    def extract(self, views, previous):
        self.previous.append(list(previous))
        return ["" for _ in views]


def test_onestep_prompts_see_the_view_alone():
    """onestep is AR-1 (README: only recursive_multiscale gives the extractor the previous state)."""
    rng = np.random.default_rng(0)
    x0 = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    prompts = _Recording()
    ZoomChain("onestep", _Nearest(), prompts, steps=2, size=64).run([x0])
    assert prompts.previous == [[None], [None]]


def test_x0_fills_the_whole_square_where_float_truncation_gives_511():
    # 103 * (512 / 103) is 511.99...: int() gives 511, the official code's 511-px x0 with a black strip
    w, h = 103, 316
    assert int(w * (512 / min(w, h))) == 511
    x0, _ = prepare_x0(Image.new("RGB", (w, h), (255, 255, 255)), 512)
    a = np.asarray(x0)
    assert a.shape == (512, 512, 3)
    assert a.min() >= 250, "x0 has dark pixels: a border where the resized image was 511 px wide"


def test_thin_image_x0_is_lanczos_like_the_direct_path(monkeypatch):
    """The crop-window path (intermediate over 4096**2 px) matches the direct LANCZOS result within one
    grey level (prepare_x0's docstring); bicubic differs from it by far more on noise."""
    rng = np.random.default_rng(1)
    w, h, size = 20000, 4, 8  # intermediate 40000 x 8: small, but the thin path is taken only above 4096**2
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    import coz.images as images

    new_w = int(w * size / h)
    direct = img.resize((new_w, size), Image.LANCZOS)
    left = (new_w - size) // 2
    expected = np.asarray(direct.crop((left, 0, left + size, size))).astype(int)
    monkeypatch.setattr(images, "_MAX_INTERMEDIATE_PIXELS", 1)  # the crop-window path, on a small image
    x0, _ = prepare_x0(img, size)
    assert np.abs(np.asarray(x0).astype(int) - expected).max() <= 1
