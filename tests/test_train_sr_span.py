"""coz.train_sr's CNN recipe on SPAN: it fine-tunes, and its export loads back into backbone=span."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.run.cli import quote_null_choices, tool_config_dir
from coz.train_sr.tool import build


def compose_cnn(overrides: list[str]):
    base = ["experiment=cnn", "logger=csv", "data.crop=32", "log.images_every=0", "trainer.accelerator=cpu"]
    base += ["val.every_n_steps=0"]  # no validation metrics to build (NIQE's parameters, LPIPS' weights)
    with initialize_config_dir(config_dir=tool_config_dir("train_sr"), version_base="1.3"):
        return compose(config_name="train_sr", overrides=quote_null_choices([*base, *overrides]))


@pytest.mark.slow
def test_cnn_recipe_fine_tunes_span_and_zoom_loads_it(tmp_path, compose_zoom, photo):
    from coz.backbones import build_backbone
    from coz.backbones.cnn.span import Span, ensure_cached_weights, load_weights
    from coz.geometry import to_tensor

    cfg = compose_cnn(["backbone=span", "stages=[{degradation: bicubic, steps: 1}]", "optim.lr=1e-3"])
    assert cfg.backbone.name == "span"
    trainer, module = build(cfg, tmp_path)
    trainer.fit(module)
    before, _ = load_weights(ensure_cached_weights())  # the shipped ClearReality4x it started from
    after = module.gen.net.state_dict()
    changed = [k for k in before if ".conv.1." in k and not torch.equal(before[k], after[k])]
    assert changed, "no 3x3 training branch changed"
    weights = tmp_path / "export" / "span.safetensors"
    x = to_tensor([photo.resize((24, 24))])
    with torch.no_grad():
        expected = module.gen.net.eval()(x).clamp(0, 1)
    for runtime in ("torch", "ncnn"):
        zoom = compose_zoom(["backbone=span", f"backbone.weights={weights}", f"backbone.runtime={runtime}"])
        backbone = build_backbone(zoom.backbone)
        assert isinstance(backbone, Span) and backbone.runtime == runtime
        assert torch.allclose(backbone.upscale(x), expected, atol=1e-4)
    shipped = Span.from_config(runtime="torch").upscale(x)
    assert (shipped - expected).abs().max() > 1e-4  # the export is the fine-tuned model, not the shipped one
