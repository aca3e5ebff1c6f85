"""Loading SD3-medium's parts (diffusers layout) from a hub id or a local folder.

Transformer and VAE load in fp32 (the backbone casts them to its ``dtype``), text encoders in
``text_dtype`` (official: fp16). With ``drop_t5`` the 4.7B-parameter T5-XXL is never loaded.
"""

from __future__ import annotations

import torch

from coz.backbones.diffusion.hub import resolve_model
from coz.errors import CozError


def load_sd3_parts(model: str, text_dtype: torch.dtype = torch.float16, drop_t5: bool = False) -> dict:
    """``transformer``, ``vae``, ``encoders`` [CLIP-L, CLIP-G, T5 or None], ``tokenizers``, ``joint_dim``."""
    where, local = resolve_model(model, "backbone.model")  # fails fast when missing
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

    kw = dict(local_files_only=local)
    try:
        transformer = SD3Transformer2DModel.from_pretrained(
            where, subfolder="transformer", torch_dtype=torch.float32, **kw
        )
        vae = AutoencoderKL.from_pretrained(where, subfolder="vae", torch_dtype=torch.float32, **kw)
        encoders = [
            CLIPTextModelWithProjection.from_pretrained(
                where, subfolder="text_encoder", dtype=text_dtype, **kw
            ),
            CLIPTextModelWithProjection.from_pretrained(
                where, subfolder="text_encoder_2", dtype=text_dtype, **kw
            ),
            None
            if drop_t5
            else T5EncoderModel.from_pretrained(where, subfolder="text_encoder_3", dtype=text_dtype, **kw),
        ]
        tokenizers = [
            AutoTokenizer.from_pretrained(where, subfolder=sub, **kw)
            for sub in ("tokenizer", "tokenizer_2", "tokenizer_3")
        ]
    except (OSError, ValueError) as e:
        raise CozError(
            f"backbone.model={model}: could not load SD3 from it ({str(e).splitlines()[0][:300]}); "
            "give a complete diffusers copy of stable-diffusion-3-medium-diffusers"
        ) from None
    return dict(
        transformer=transformer,
        vae=vae,
        encoders=encoders,
        tokenizers=tokenizers,
        joint_dim=int(transformer.config.joint_attention_dim),
    )
