"""Random-weight parts the tiny backbone twins share: a narrow CLIP text encoder and an SD-style VAE.
Built from configs, offline, in milliseconds; they test plumbing, not quality."""

from __future__ import annotations

CLIP_VOCAB = 49408  # CLIP's BPE vocabulary (the real tokenizer drives the tiny encoders)


def tiny_clip_text(width: int, *, projection: bool = False, hidden_act: str = "quick_gelu"):
    """A 2-layer CLIP text encoder of hidden width ``width`` over CLIP's 77 tokens; ``projection``
    adds the text projection (SD3's CLIP-L/G), ``hidden_act`` "gelu" is OpenCLIP-H's (SD2.1)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=width,
        hidden_act=hidden_act,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def tiny_vae(latent_channels: int = 4, scaling_factor: float = 0.18215, shift_factor: float | None = None):
    """A tiny AutoencoderKL with 8x downsampling. Defaults: SD2.1's and SD-Turbo's latent (4 channels,
    scale 0.18215); SD3's is ``tiny_vae(16, 1.5305, 0.0609)``, which also drops the quant convs as SD3 does."""
    from diffusers import AutoencoderKL

    sd3_style = shift_factor is not None
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=512,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not sd3_style,
        use_post_quant_conv=not sd3_style,
    )
