"""backbone=spandrel: any 4x model spandrel detects, from tiny random-weight files spandrel's own
architecture classes build; one-line errors for what cannot work."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from coz.backbones import build_backbone
from coz.backbones.cnn.span import Span
from coz.backbones.seeded import seeded
from coz.errors import CozError


def compact(scale: int) -> torch.nn.Module:
    """A tiny Real-ESRGAN Compact (SRVGGNetCompact) with random weights."""
    from spandrel.architectures.Compact import Compact

    with seeded(scale):
        return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()


@pytest.fixture(scope="module")
def compact_files(tmp_path_factory) -> dict[int, object]:
    """{scale: .pth path} of tiny Compact models at 2x and 4x."""
    folder = tmp_path_factory.mktemp("spandrel")
    files = {}
    for scale in (2, 4):
        files[scale] = folder / f"compact_x{scale}.pth"
        torch.save(compact(scale).state_dict(), files[scale])
    return files


def build(compose_zoom, overrides: list[str]):
    return build_backbone(compose_zoom(["backbone=spandrel", *overrides]).backbone)


def test_a_4x_model_runs_as_its_architecture_does(compose_zoom, compact_files):
    backbone = build(compose_zoom, [f"backbone.weights={compact_files[4]}"])
    assert backbone.scale == 4 and backbone.runtime == "torch" and "Compact" in backbone.name
    images = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    out = backbone.upscale(images, ["", ""])
    with torch.inference_mode():
        reference = compact(4)(images).clamp(0, 1)
    assert out.shape == (2, 3, 32, 48)
    assert torch.allclose(out, reference, atol=1e-5)


def test_the_scale_must_be_the_zoom_factor(compose_zoom, compact_files):
    with pytest.raises(CozError, match=r"a 2x RealESRGAN Compact model, but zoom.factor=4 needs a 4x one"):
        build(compose_zoom, [f"backbone.weights={compact_files[2]}"])
    backbone = build(compose_zoom, [f"backbone.weights={compact_files[2]}", "zoom.factor=2"])
    assert backbone.scale == 2


def test_a_spandrel_span_file_equals_backbone_span(compose_zoom, tmp_path):
    """A SPAN saved by spandrel's class runs the same through backbone=spandrel and backbone=span."""
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    path = tmp_path / "tiny_span.safetensors"
    save_file(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4).state_dict(), str(path))
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    generic = build(compose_zoom, [f"backbone.weights={path}"]).upscale(images, [""])
    span = Span.from_config(weights=path)
    assert span.runtime == "torch"  # no ncnn graph for 8 channels: PyTorch, with a warning
    assert torch.allclose(generic, span.upscale(images, [""]), atol=1e-6)


def test_files_spandrel_cannot_use_fail_in_one_line(compose_zoom, tmp_path):
    unknown = tmp_path / "unknown.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(unknown))
    with pytest.raises(CozError, match="spandrel does not recognise this architecture"):
        build(compose_zoom, [f"backbone.weights={unknown}"])
    with pytest.raises(CozError, match="needs backbone.weights=FILE"):
        build(compose_zoom, [])
    with pytest.raises(CozError, match="file not found"):
        build(compose_zoom, [f"backbone.weights={tmp_path / 'missing.pth'}"])
    code = tmp_path / "code.pth"
    torch.save({"model": torch.nn.Linear(1, 1)}, code)  # a pickled module: refused by weights_only
    with pytest.raises(CozError, match="not a safe checkpoint: it pickles torch.nn.modules.linear.Linear"):
        build(compose_zoom, [f"backbone.weights={code}"])
