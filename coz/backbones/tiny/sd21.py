"""A tiny random-weight SD2.1-base (the ``backbone=tiny_sd21`` twin of ``backbone=sd21``), built offline.

Same classes as stable-diffusion-2-1-base (UNet2DConditionModel with linear-projection cross
attention, a 4-channel AutoencoderKL with 8x downsampling and quant convs, CLIPTextModel, CLIP's
tokenizer, DDPMScheduler with SD2.1's betas) and the same 77-token prompts, only narrow and
shallow, so the whole OSEDiff-SD2.1 path runs in tests and on a laptop CPU in seconds.

    real SD2.1-base                           tiny
    CLIP text (OpenCLIP-H) 23 layers x 1024   2 layers x 32
    UNet 4 levels 320/640/1280/1280           2 levels 16/32 (+ a cross-attention mid block)
    VAE 4 latent ch., x8 (128/256/512/512)    4 latent ch., x8 (8/16/16/16)

The UNet keeps every kind of layer OSEDiff puts a LoRA on (conv_in/conv_out, resnet convs and
shortcuts, attention q/k/v/out, proj_in/proj_out, feed-forwards, up/down samplers) in all three
adapter groups (down blocks, up blocks, the rest).
"""

from __future__ import annotations

import copy
import functools

from coz.backbones.seeded import seeded
from coz.backbones.tiny.parts import tiny_clip_text, tiny_vae

TEXT_DIM = 32  # CLIP hidden width = the UNet's cross_attention_dim


def _unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,  # diffusers' naming quirk: the number of heads (SD2.1: [5, 10, 20, 20])
        use_linear_projection=True,  # as SD2.1
    )


def sd21_scheduler():
    """SD2.1-base's DDPMScheduler (scaled-linear betas 0.00085..0.012, epsilon prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,
    )


@functools.lru_cache(maxsize=2)
def _components(seed: int) -> dict:
    from coz.prompts.hygiene import clip_tokenizer

    with seeded(seed):  # building the twin must not move the caller's RNG
        parts = dict(unet=_unet(), vae=tiny_vae(), text_encoder=tiny_clip_text(TEXT_DIM, hidden_act="gelu"))
    for module in parts.values():
        module.eval().requires_grad_(False)
    parts["tokenizer"] = clip_tokenizer()
    parts["scheduler"] = sd21_scheduler()
    return parts


def tiny_sd21_components(seed: int = 0) -> dict:
    """Fresh copies of the seeded tiny SD2.1 parts (built once per process, then copied):
    ``unet``, ``vae``, ``text_encoder``, ``scheduler`` and ``tokenizer`` (shared)."""
    parts = _components(seed)
    return dict(
        unet=copy.deepcopy(parts["unet"]),
        vae=copy.deepcopy(parts["vae"]),
        text_encoder=copy.deepcopy(parts["text_encoder"]),
        tokenizer=parts["tokenizer"],
        scheduler=copy.deepcopy(parts["scheduler"]),  # set_timesteps mutates it
    )
