"""A tiny model built with a seed has the same weights whatever code path builds it, and building it
leaves the caller's random stream alone. The hashes were taken on main before the seeded builders
shared one helper (coz.backbones.seeded): a refactor that moves a single random draw changes them."""

from __future__ import annotations

import hashlib

import pytest
import torch
from omegaconf import OmegaConf

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def digest(*modules: torch.nn.Module) -> str:
    """sha256 over every tensor of the modules' state dicts (names, shapes, dtypes and bytes), in order."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def sd3(seed: int) -> str:
    from coz.backbones.diffusion.sd3 import OSEDiffSD3

    b = OSEDiffSD3.tiny(model_seed=seed, seed=seed + 7)
    return digest(b.transformer, b.vae, *[e for e in b.text.encoders if e is not None])


def sd21(seed: int) -> str:
    from coz.backbones.diffusion.sd21 import OSEDiffSD21

    b = OSEDiffSD21.tiny(model_seed=seed, seed=seed + 7)
    return digest(b.unet, b.vae, b.text_encoder)


def s3diff(seed: int) -> str:
    from coz.backbones.diffusion.s3diff import S3Diff

    b = S3Diff.tiny(model_seed=seed, seed=seed + 7)
    return digest(b.unet, b.vae, b.text_encoder, b.estimator, b.modulation)


def cnn(name: str, seed: int) -> str:
    from coz.train_sr.generators import build_generator

    cfg = OmegaConf.create({"name": name, "model_seed": seed, "num_feat": 8, "num_block": 1})
    return digest(build_generator(cfg, OmegaConf.create({})).net)


BUILDERS = {
    "tiny_sd3": sd3,
    "tiny_sd21": sd21,
    "tiny_s3diff": s3diff,
    "tiny_realesrgan": lambda seed: cnn("tiny_realesrgan", seed),
    "tiny_span": lambda seed: cnn("tiny_span", seed),
}
# taken on main (commit 8537033), torch 2.14 CPU
MAIN = {
    "tiny_sd3": ["b705171df7a11ffa", "b8e782507af37d3f"],
    "tiny_sd21": ["31ee44acd45aa72a", "24feff9d7f6d0553"],
    "tiny_s3diff": ["033247b1322d057c", "44c79f36a9ba3ce6"],
    "tiny_realesrgan": ["148dac2738bf3fbb", "9897d5830b5c3c07"],
    "tiny_span": ["5b29923216563b82", "8d8580bfeae30e81"],
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_seeded_tiny_model_has_the_weights_it_had_on_main(name):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    got = [BUILDERS[name](seed) for seed in (0, 1)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is not moved
    assert got[0] != got[1]  # the seed matters
    assert got == MAIN[name]
