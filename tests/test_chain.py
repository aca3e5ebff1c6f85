"""Every zoom mode of the chain: what each step feeds the backbone and the prompt extractor."""

import numpy as np
import pytest
import torch
from PIL import Image

from coz.backbones.base import Backbone
from coz.backbones.interp import Interpolation
from coz.chain import MODES, ZoomChain
from coz.geometry import center_crop, to_tensor
from coz.prompts.base import NullPrompt, PromptExtractor, with_user_prompt


class RecordingBackbone(Backbone):
    """Nearest-neighbour 4x that remembers what it was given."""

    def __init__(self, upsampled: bool = False) -> None:
        self.takes_upsampled_input = upsampled
        self.name = "recording"
        self.inputs: list[torch.Tensor] = []
        self.prompts: list[list[str]] = []

    def upscale(self, images, prompts):
        self.inputs.append(images.clone())
        self.prompts.append(list(prompts))
        if self.takes_upsampled_input:
            return images.flip(-1)  # "restore" the view; flipped so the output is distinguishable
        return torch.nn.functional.interpolate(images, scale_factor=4, mode="nearest-exact")


class RecordingPrompts(PromptExtractor):
    name = "recording"

    def __init__(self):
        self.calls = []

    def extract(self, views, previous):
        self.calls.append((views, previous))
        return [f"view {i}" for i in range(len(views))]


@pytest.fixture()
def x0s(samples):
    return [Image.open(p).convert("RGB").resize((512, 512), Image.LANCZOS) for p in samples[:2]]


def arr(img):
    return np.asarray(img)


@pytest.mark.parametrize("mode", ["recursive", "recursive_multiscale"])
def test_recursive_modes_feed_center_crop_of_previous_state(mode, x0s):
    backbone, prompts = RecordingBackbone(), RecordingPrompts()
    zooms = ZoomChain(mode, backbone, prompts, steps=3).run(x0s)
    for zoom in zooms:
        assert zoom.scales == [1, 4, 16, 64]
        assert all(s.size == (512, 512) for s in zoom.states)
    for i in range(3):
        sources = [z.states[i] for z in zooms]
        expected_lr = to_tensor([center_crop(s, 4) for s in sources])
        assert torch.equal(backbone.inputs[i], expected_lr)  # the 128 crop itself, batched
        views, previous = prompts.calls[i]
        for view, src in zip(views, sources, strict=True):
            np.testing.assert_array_equal(
                arr(view), arr(center_crop(src, 4).resize((512, 512), Image.BICUBIC))
            )
        if mode == "recursive_multiscale":  # AR-2: the previous state goes with the view
            assert all(np.array_equal(arr(p), arr(s)) for p, s in zip(previous, sources, strict=True))
        else:  # AR-1: the view alone
            assert previous == [None, None]
        assert backbone.prompts[i] == ["view 0", "view 1"]


def test_onestep_crops_x0_and_brings_it_to_the_input_size(x0s):
    backbone = RecordingBackbone()
    zooms = ZoomChain("onestep", backbone, NullPrompt(), steps=3).run(x0s)
    for k, lr in enumerate(backbone.inputs, start=1):
        crops = [center_crop(x0, 4**k) for x0 in x0s]
        assert crops[0].size == (512 // 4**k,) * 2
        expected = [c if c.width == 128 else c.resize((128, 128), Image.BICUBIC) for c in crops]
        assert torch.equal(lr, to_tensor(expected))
    assert [z.scales for z in zooms] == [[1, 4, 16, 64]] * 2


def test_diffusion_style_backbone_gets_the_bicubic_view(x0s):
    backbone = RecordingBackbone(upsampled=True)
    zooms = ZoomChain("recursive_multiscale", backbone, NullPrompt(), steps=2).run(x0s)
    for i, lr in enumerate(backbone.inputs):
        assert lr.shape == (2, 3, 512, 512)
        assert torch.equal(lr, to_tensor([z.steps[i].view for z in zooms]))


@pytest.mark.parametrize("mode,resample", [("nearest", Image.NEAREST), ("bicubic", Image.BICUBIC)])
def test_interpolation_baselines(mode, resample, x0s):
    zooms = ZoomChain(mode, None, NullPrompt(), steps=4).run(x0s)
    for zoom in zooms:
        for k, step in enumerate(zoom.steps, start=1):
            expected = center_crop(zoom.x0, 4**k).resize((512, 512), resample)
            assert np.array_equal(arr(step.state), arr(expected))
            assert step.prompt is None and step.view is None


def test_recursive_nearest_backbone_equals_direct_nearest_zoom(x0s):
    """Nearest 4x is exact pixel replication, so zooming 4x four times must equal one 256x zoom."""
    chained = ZoomChain("recursive", Interpolation("nearest"), NullPrompt(), steps=4).run(x0s)
    direct = ZoomChain("nearest", None, NullPrompt(), steps=4).run(x0s)
    for a, b in zip(chained, direct, strict=True):
        for sa, sb in zip(a.states, b.states, strict=True):
            assert np.array_equal(arr(sa), arr(sb))


def test_user_prompt_is_appended_like_the_official_script(x0s):
    backbone = RecordingBackbone()
    ZoomChain("recursive", backbone, RecordingPrompts(), steps=1, user_prompt="sharp").run(x0s[:1])
    assert backbone.prompts == [["view 0, sharp,"]]
    assert with_user_prompt("", "sharp") == "sharp"
    assert with_user_prompt("a cat", "") == "a cat"


def test_timer_and_progress_callback(x0s):
    calls = []
    chain = ZoomChain("recursive", RecordingBackbone(), NullPrompt(), steps=2)
    chain.run(x0s, on_step=calls.append)
    assert calls == [2, 2]
    summary = chain.timer.summary()
    assert summary["sr_s"] > 0 and "prompt_s" in summary and summary["total_s"] >= summary["sr_s"]


def test_bad_chain_settings_fail_clearly(x0s):
    with pytest.raises(ValueError, match="not one of"):
        ZoomChain("zigzag", None, NullPrompt())
    with pytest.raises(ValueError, match="needs a backbone"):
        ZoomChain("recursive", None, NullPrompt())
    with pytest.raises(ValueError, match="no center"):
        ZoomChain("nearest", None, NullPrompt(), steps=5)
    with pytest.raises(ValueError, match="must be 512x512"):
        ZoomChain("nearest", None, NullPrompt()).run([x0s[0].resize((500, 500))])
    assert set(MODES) == {"recursive_multiscale", "recursive", "onestep", "nearest", "bicubic", "full"}


def test_a_prompt_clip_cuts_is_reported_with_its_image_and_step(caplog):
    import logging

    from coz.prompts.hygiene import CleanPrompts

    class Wordy(NullPrompt):
        name = "wordy"

        def extract(self, views, previous):
            return [" ".join(["fur"] * 90) for _ in views]

    prompter = CleanPrompts(Wordy(), clean=False, check_clip=True)
    chain = ZoomChain("recursive", Interpolation("bicubic"), prompter, steps=2, size=64)
    with caplog.at_level(logging.WARNING, logger="coz.prompts"):
        chain.run([Image.new("RGB", (64, 64))] * 2, names=["cat", "dog"])
    labels = [r.getMessage() for r in caplog.records]
    assert len(labels) == 4
    assert any("dog, x16" in m for m in labels) and any("cat, x4" in m for m in labels)


class ConstantRestorer(Backbone):
    """A diffusion-style backbone whose restored view is one grey level between two 8-bit values."""

    takes_upsampled_input = True
    to_8bit = "truncate"
    name = "constant"

    def upscale(self, images, prompts):
        return torch.full_like(images, 100.7 / 255)


@pytest.mark.parametrize(("to_8bit", "level"), [("backbone", 100), ("truncate", 100), ("round", 101)])
def test_states_become_8_bit_as_the_backbones_release_saves_them(to_8bit, level):
    # the released diffusion scripts: ToPILImage()(x) = x.mul(255).byte(): 100.7 -> 100; rounding: 101
    x0 = Image.new("RGB", (32, 32), (10, 20, 30))
    chain = ZoomChain("recursive", ConstantRestorer(), NullPrompt(), steps=2, size=32, to_8bit=to_8bit)
    (zoom,) = chain.run([x0])
    assert all(np.all(np.asarray(s) == level) for s in zoom.states[1:])
    with pytest.raises(ValueError, match="zoom.to_8bit='floor'"):
        ZoomChain("recursive", ConstantRestorer(), NullPrompt(), steps=1, size=32, to_8bit="floor")


def test_diffusion_backbones_truncate_and_cnns_round_by_default():
    from coz.backbones.cnn.backbone import CnnBackbone
    from coz.backbones.diffusion.one_step import OneStepDiffusion

    assert (OneStepDiffusion.to_8bit, CnnBackbone.to_8bit) == ("truncate", "round")
