"""RRDBNet is spandrel's ESRGAN: it computes what coz's former hand-written RRDBNet computed (kept below,
in this file only, as the oracle) with the same weights, and its weights keep BasicSR's names on disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coz.backbones.cnn.rrdbnet import basicsr_name, conv_names, from_basicsr, rrdbnet, to_basicsr
from coz.errors import CozError

# --- the oracle: coz's hand-written RRDBNet as it was (BasicSR names), training and inference forms --


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=True)


class _DenseBlock(nn.Module):
    def __init__(self, f: int, g: int) -> None:
        super().__init__()
        self.g = g
        self.conv1, self.conv2 = _conv3x3(f, g), _conv3x3(f + g, g)
        self.conv3, self.conv4 = _conv3x3(f + 2 * g, g), _conv3x3(f + 3 * g, g)
        self.conv5 = _conv3x3(f + 4 * g, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # every concatenation a fresh tensor
            x1 = F.leaky_relu(self.conv1(x), 0.2)
            x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
            x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
            x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
            return torch.add(x, self.conv5(torch.cat((x, x1, x2, x3, x4), 1)), alpha=0.2)
        b, f, h, w = x.shape  # inference: the dense features in one preallocated buffer
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        feats = torch.empty((b, f + 4 * self.g, h, w), dtype=x.dtype, memory_format=fmt)
        feats[:, :f].copy_(x)
        width = f
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats[:, width : width + self.g].copy_(F.leaky_relu_(conv(feats[:, :width]), 0.2))
            width += self.g
        return self.conv5(feats).mul_(0.2).add_(x)


class _RRDB(nn.Module):
    def __init__(self, f: int, g: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = _DenseBlock(f, g), _DenseBlock(f, g), _DenseBlock(f, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return torch.add(x, out, alpha=0.2) if torch.is_grad_enabled() else out.mul_(0.2).add_(x)


class HandWrittenRRDBNet(nn.Module):
    def __init__(self, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv_first = _conv3x3(3, num_feat)
        self.body = nn.Sequential(*(_RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1, self.conv_up2 = _conv3x3(num_feat, num_feat), _conv3x3(num_feat, num_feat)
        self.conv_hr, self.conv_last = _conv3x3(num_feat, num_feat), _conv3x3(num_feat, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        body = self.conv_body(self.body(feat))
        feat = body.add_(feat) if not torch.is_grad_enabled() else feat + body
        feat = F.leaky_relu_(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu_(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu_(self.conv_hr(feat), 0.2))


# --- the tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[HandWrittenRRDBNet, dict[str, torch.Tensor]]:
    """The oracle at 16 features, 2 blocks, random weights; biases too, so that every one is checked."""
    torch.manual_seed(0)
    oracle = HandWrittenRRDBNet(num_feat=16, num_block=2).eval()
    with torch.no_grad():
        for p in oracle.parameters():
            p.normal_(0, 0.05)
    return oracle, {k: v.clone() for k, v in oracle.state_dict().items()}


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_outputs_identical_to_the_hand_written_network(tiny, fmt):
    oracle, state = tiny
    net = rrdbnet(state, num_feat=16, num_block=2).eval()
    oracle.to(memory_format=fmt), net.to(memory_format=fmt)
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=fmt)
    with torch.inference_mode():  # the old inference form: bit for bit
        reference = oracle(x)
        out = net(x)
    assert out.shape == (2, 3, 40, 48) and reference.abs().max() > 0.01
    assert torch.equal(out, reference)
    with torch.enable_grad():  # the old training form (torch.add with alpha): to rounding
        assert (net(x) - oracle(x)).abs().max() <= 1e-6


def test_basicsr_names_round_trip(tiny):
    """Loading renames BasicSR's keys to spandrel's; saving names them back: same keys, order, tensors."""
    _, state = tiny
    net = rrdbnet(state, num_feat=16, num_block=2)
    theirs = net.state_dict()
    assert "model.1.sub.1.RDB3.conv5.0.bias" in theirs and "model.1.sub.2.weight" in theirs  # spandrel's
    back = to_basicsr(theirs)
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert [basicsr_name(k) for k, _ in net.named_parameters()] == list(state)
    assert list(from_basicsr(back, num_block=2)) == list(theirs)
    prefixes = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state))
    assert prefixes == conv_names(num_block=2)  # the ncnn graph's conv order is forward order
    with pytest.raises(ValueError, match="not a parameter of a 4x ESRGAN"):
        basicsr_name("model.2.weight")


def test_foreign_or_resized_weights_fail_to_load(tiny):
    _, state = tiny
    with pytest.raises(ValueError, match=r"not a 64-feature, 23-block RRDBNet: 630 tensors missing"):
        rrdbnet(state)  # x4plus sizes expected
    extra = {**state, "extra.weight": torch.zeros(1)}
    with pytest.raises(
        ValueError, match=r"0 tensors missing \(e.g. \[\]\), 1 unexpected \(e.g. \['extra.weight'\]\)"
    ):
        rrdbnet(extra, num_feat=16, num_block=2)
    resized = {**state, "conv_last.bias": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"conv_last.bias has shape \(4,\), expected \(3,\)"):
        rrdbnet(resized, num_feat=16, num_block=2)


def test_trains_with_gradients_everywhere():
    torch.manual_seed(0)
    net = rrdbnet(num_feat=8, num_block=1)
    net(torch.rand(1, 3, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.slow  # three x4plus forwards: about 10 s of CPU
def test_x4plus_outputs_identical_to_the_hand_written_network():
    from coz.backbones.cnn.realesrgan import ensure_cached_weights, load_weights

    state = load_weights(ensure_cached_weights())
    oracle = HandWrittenRRDBNet().eval()
    oracle.load_state_dict(state)
    net = rrdbnet(state).eval()
    fmt = torch.channels_last  # as RealESRGAN runs PyTorch on the CPU
    oracle.to(memory_format=fmt), net.to(memory_format=fmt)
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=fmt)
    with torch.inference_mode():
        reference = oracle(x)
        out = net(x)
    assert out.shape == (1, 3, 48, 64)
    assert torch.equal(out, reference)
    with torch.enable_grad():
        assert (net(x) - reference).abs().max() < 1e-5


def test_train_sr_names_rrdbnet_weights_as_basicsr(tmp_path, tiny):
    """coz.train_sr's checkpoints and export hold BasicSR names (as before spandrel built the net), and
    the export loads back through spandrel's own detection (``backbone=spandrel``) unchanged."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from coz.backbones.cnn.spandrel_model import load_descriptor
    from coz.train_sr.generators import build_generator

    _, state = tiny
    cfg = OmegaConf.create({"name": "tiny_realesrgan", "num_feat": 16, "num_block": 2})
    gen = build_generator(cfg, OmegaConf.create({}))
    assert sorted(gen.trainable_state()) == sorted(state)  # checkpoint names
    gen.load_trainable_state(state)  # a checkpoint written by the hand-written network resumes
    exported = load_file(str(gen.export(tmp_path)["weights"]))
    assert sorted(exported) == sorted(state) and all(torch.equal(exported[k], state[k]) for k in state)
    descriptor = load_descriptor(tmp_path / "realesrgan.safetensors", scale=4)
    assert descriptor.architecture.name == "ESRGAN"
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(descriptor.model.eval()(x), gen.net.eval()(x))
    bad = OmegaConf.create({**cfg, "num_grow_ch": 8})
    with pytest.raises(CozError, match="backbone.num_grow_ch=8: spandrel's RRDBNet grows by 32"):
        build_generator(bad, OmegaConf.create({}))


def test_train_sr_refuses_another_networks_weights_in_one_line(tmp_path, tiny):
    """``coz.train_sr backbone=realesrgan backbone.weights=FILE`` with the weights of a smaller RRDBNet:
    one CozError naming the option and the file (coz.zoom does the same), not a ValueError traceback."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from coz.train_sr.generators import build_generator

    _, state = tiny
    path = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    cfg = OmegaConf.create({"name": "realesrgan", "weights": str(path)})
    with pytest.raises(
        CozError, match=rf"backbone.weights={path}: cannot load it .*630 tensors missing"
    ) as err:
        build_generator(cfg, OmegaConf.create({}))
    assert "\n" not in str(err.value)
