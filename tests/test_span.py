"""SPAN: the ncnn -> spandrel conversion against ncnn itself, the ncnn runtime, the cache and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coz.backbones import build_backbone
from coz.backbones.cnn import span as span_module
from coz.backbones.cnn.ncnn_weights import read_weights
from coz.backbones.cnn.span import Span, build_span, ensure_cached_weights, fused_state, load_weights
from coz.backbones.cnn.span_weights import MODELS, conv_names, convert_span_ncnn, find_model_files
from coz.errors import CozError


@pytest.fixture(scope="module")
def small_photo(samples) -> torch.Tensor:
    """(1, 3, 24, 32) float32 in [0, 1]: a downscaled photo (SR models are made for photos)."""
    from PIL import Image

    image = Image.open(samples[0]).convert("RGB").resize((32, 24), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


def ncnn_reference(model: str, image: torch.Tensor) -> torch.Tensor:
    """ncnn's own output on the package's own files, default options, Vulkan off: (3, 4h, 4w)."""
    import ncnn

    param, bin_ = find_model_files(model)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_)) == 0
    pixels = np.ascontiguousarray(image[0].numpy())
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(pixels))
    status, out = extractor.extract("output")
    assert status == 0
    return torch.from_numpy(np.array(out))


@pytest.mark.parametrize("model", MODELS)
def test_converted_model_matches_ncnn(model, small_photo):
    state, norm = convert_span_ncnn(*find_model_files(model))
    net = build_span(state, norm)
    with torch.inference_mode():
        ours = net(small_photo)[0]  # spandrel's PyTorch SPAN, unclamped as ncnn's
    reference = ncnn_reference(model, small_photo)
    assert ours.shape == reference.shape == (3, 96, 128)
    assert (ours - reference).abs().max().item() <= 1e-4
    assert norm["img_range"] == (1.0 if model == "4xSPANkendata" else 255.0)


def test_branches_fuse_back_to_the_shipped_convs():
    """spandrel recomputes each eval conv from its training branches: they must give the file's conv."""
    param, bin_ = find_model_files("ClearReality4x")
    convs, _ = read_weights(param, bin_)
    state, norm = convert_span_ncnn(param, bin_)
    fused = fused_state(build_span(state, norm))
    for name, conv in zip(conv_names(), convs, strict=True):
        assert torch.allclose(fused[f"{name}.weight"], torch.from_numpy(conv.weight), atol=1e-7, rtol=0)
        assert torch.equal(fused[f"{name}.bias"], torch.from_numpy(conv.bias))


def test_ncnn_runtime_runs_the_modules_weights(small_photo):
    """The default CPU path (ncnn, weights written from the module) equals PyTorch; fine-tuned too."""
    state, norm = load_weights(ensure_cached_weights())
    fast, reference = Span(state, norm), Span(state, norm, runtime="torch")
    assert fast.runtime == "ncnn" and reference.runtime == "torch"
    out = fast.upscale(small_photo, [""])
    assert out.shape == (1, 3, 96, 128) and out.min() >= 0 and out.max() <= 1
    assert (out - reference.upscale(small_photo, [""])).abs().max() <= 1e-4

    tuned = {k: v.clone() for k, v in state.items()}
    tuned["upsampler.0.bias"] += 0.05
    fast_tuned = Span(tuned, norm).upscale(small_photo, [""])
    assert (fast_tuned - Span(tuned, norm, runtime="torch").upscale(small_photo, [""])).abs().max() <= 1e-4
    assert (fast_tuned - out).abs().max() > 1e-2


def test_cache_converts_once_and_keeps_the_normalisation(monkeypatch, tmp_path):
    monkeypatch.setenv("COZ_CACHE", str(tmp_path))
    calls = []
    real = span_module.convert_span_ncnn
    monkeypatch.setattr(span_module, "convert_span_ncnn", lambda *a: calls.append(a) or real(*a))
    path = ensure_cached_weights("4xSPANkendata")
    assert path == tmp_path / "span" / "4xSPANkendata.safetensors" and len(calls) == 1
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["img_range"] == "1.0" and f.metadata()["rgb_mean"].startswith("0.485")
    backbone = Span.from_config(model="4xSPANkendata")
    assert len(calls) == 1 and backbone.norm["img_range"] == 1.0 and backbone.name == "span-4xSPANkendata"


def test_built_from_config_like_every_backbone(compose_zoom, small_photo):
    cfg = compose_zoom(["backbone=span"])
    assert cfg.backbone.model == "ClearReality4x"
    backbone = build_backbone(cfg.backbone)
    assert backbone.scale == 4 and not backbone.takes_upsampled_input and backbone.runtime == "ncnn"
    out = backbone.upscale(small_photo.double(), ["ignored"])
    assert out.shape == (1, 3, 96, 128) and out.dtype == torch.float64


def test_bad_models_and_files_fail_in_one_line(tmp_path):
    with pytest.raises(CozError, match="backbone.model=spanx2_ch48: not a 4x SPAN model"):
        Span.from_config(model="spanx2_ch48")
    with pytest.raises(CozError, match="SPAN weights not found"):
        Span.from_config(weights=tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"conv_first.weight": torch.zeros(1)}, str(other))
    with pytest.raises(CozError, match="not a SPAN state dict"):
        Span.from_config(weights=other)
    pth = tmp_path / "x.pth"
    pth.touch()
    with pytest.raises(CozError, match="must be a .safetensors"):
        Span.from_config(weights=pth)
