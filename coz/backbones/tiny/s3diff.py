"""A tiny random-weight SD-Turbo + degradation estimator (``backbone=tiny_s3diff``), built offline.

Same classes as S3Diff's parts (UNet2DConditionModel with 3 cross-attention down blocks + 1 plain,
a 4-channel AutoencoderKL with 8x downsampling and quant convs, CLIPTextModel, DEResNet), same block
structure (so the 10 UNet / 6 VAE LoRA block embeddings all apply), same DDPM noise schedule; only
narrow and shallow, so the S3Diff path runs in tests and on a laptop CPU in seconds.

    real (SD-Turbo / de_net.pth)            tiny
    UNet 320/640/1280/1280, 2 layers        8/16/16/16, 1 layer, linear projections
    text CLIP-H 1024 wide, 23 layers        16 wide, 2 layers (CLIP's BPE tokenizer, 77 tokens)
    VAE 128/256/512/512, 4 latent ch.       8/16/16/16, 4 latent ch., scaling 0.18215
    estimator widths 64/64/64/128, 2 blocks 8/8/8/16, 1 block, head 32 (init scale 1: scores vary)
"""

from __future__ import annotations

import copy
import functools

from coz.backbones.seeded import seeded
from coz.backbones.tiny.parts import tiny_clip_text, tiny_vae

TEXT_DIM = 16
ESTIMATOR = dict(num_feats=(8, 8, 8, 16), num_blocks=(1, 1, 1, 1), downscales=(1, 1, 2, 1), fc_hidden=32)


def sd_turbo_scheduler():
    """A DDPMScheduler with SD-Turbo's noise schedule (scaled linear 0.00085..0.012, epsilon)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def _unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=(1, 2, 2, 2),
        use_linear_projection=True,
    )


@functools.lru_cache(maxsize=2)
def _components(seed: int) -> dict:
    from coz.backbones.diffusion.degradation_estimator import DegradationEstimator
    from coz.prompts.hygiene import clip_tokenizer

    with seeded(seed):  # building the twin must not move the caller's RNG
        parts = dict(
            unet=_unet(),
            vae=tiny_vae(),
            text_encoder=tiny_clip_text(TEXT_DIM),
            estimator=DegradationEstimator(**ESTIMATOR),
        )
        parts["estimator"].init_weights(1.0)  # at the authors' 0.1 random scores all sit at 0.5
    for module in parts.values():
        module.eval().requires_grad_(False)
    parts["tokenizer"] = clip_tokenizer()
    parts["scheduler"] = sd_turbo_scheduler()
    return parts


def tiny_s3diff_components(seed: int = 0) -> dict:
    """Fresh copies of the seeded tiny parts (built once per process, then copied): ``unet``,
    ``vae``, ``text_encoder``, ``estimator``, ``scheduler``, ``tokenizer`` (shared)."""
    parts = _components(seed)
    out = {k: copy.deepcopy(v) for k, v in parts.items() if k != "tokenizer"}
    out["tokenizer"] = parts["tokenizer"]
    return out
