"""coz.zoom and coz.train_sr build a backbone through one builder (``coz.backbones.build_backbone``):
the network coz.train_sr trains is, weight for weight, the one coz.zoom runs from the same config, with
only what trains requiring grad; and the training recipe's tiny CNN twins build for coz.zoom too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from coz.backbones import build_backbone
from coz.train_sr.generators import build_generator

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

CONFIGS = {  # the diffusion twins: their YAML (as a typed config has every key) with these values
    "tiny_sd3": {"name": "tiny_sd3", "model_seed": 1, "seed": 5, "lora_rank": 2, "text_dtype": "float32"},
    "tiny_sd21": {"name": "tiny_sd21", "model_seed": 1, "seed": 5, "lora_rank": 2, "vae_lora_rank": 2},
    "tiny_realesrgan": {"name": "tiny_realesrgan", "model_seed": 1, "num_feat": 8, "num_block": 1},
    "tiny_span": {"name": "tiny_span", "model_seed": 1, "num_feat": 8},
}


def network(backbone, key: str) -> torch.nn.Module:
    """The inference backbone's network that the generator calls ``key``."""
    return backbone.model if key == "net" else getattr(backbone, key)


def config(name: str):
    yaml = Path(f"conf/shared/backbone/{name}.yaml")
    return OmegaConf.merge(OmegaConf.load(yaml) if yaml.exists() else {}, CONFIGS[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_training_trains_the_network_zoom_runs(name):
    cfg = config(name)
    zoom = build_backbone(cfg)
    gen = build_generator(cfg, OmegaConf.create({"negative_prompt": ""}))
    trained = {id(p) for p in gen._named_trainable().values()}
    assert trained, "nothing trains"
    for key, module in gen.modules().items():
        ours, theirs = module.state_dict(), network(zoom, key).state_dict()
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), key
        assert all(p.requires_grad == (id(p) in trained) for p in module.parameters()), key
        assert not any(p.requires_grad for p in network(zoom, key).parameters())  # inference trains nothing


@pytest.mark.parametrize("name", ["tiny_realesrgan", "tiny_span"])
def test_the_tiny_cnn_twins_zoom_as_they_train(name):
    cfg = OmegaConf.create(CONFIGS[name])
    zoom = build_backbone(cfg)
    net = build_generator(cfg, OmegaConf.create({})).net.eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = zoom.upscale(x, ["", ""])
    assert out.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(out, net(x).clamp(0, 1), atol=1e-5)
