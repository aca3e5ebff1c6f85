"""A tiny random-weight SD3 (the ``backbone=tiny_sd3`` twin of ``backbone=sd3``), built offline.

Same classes as SD3-medium (SD3Transformer2DModel, a 16-channel AutoencoderKL with 8x
downsampling, CLIPTextModelWithProjection x2, T5EncoderModel) and the same token lengths, only
narrow and shallow, so the whole OSEDiff-SD3 path runs in tests and on a laptop CPU in seconds.

    real SD3-medium                     tiny
    CLIP-L hidden/proj 768              16
    CLIP-G hidden/proj 1280             24      -> pooled 2048 | 40
    T5 d_model = joint width 4096       48      (CLIP 77 tokens padded to it)
    transformer 24 blocks x 1536        2 blocks x 32 (4 heads of 8), patch 2
    VAE 16 latent ch., x8               16 latent ch., x8 (channels 8/16/16/16)

Tokenizers: CLIP's exact BPE (from the ``openai-clip`` wheel's vocabulary, see
:func:`coz.prompts.hygiene.clip_tokenizer`); for T5 a byte-level tokenizer (259 ids: pad, eos,
unk, 256 bytes) made with the ``tokenizers`` library, padded to 512 like T5's.
"""

from __future__ import annotations

import copy
import functools

from coz.backbones.seeded import seeded
from coz.backbones.tiny.parts import tiny_clip_text, tiny_vae

CLIP_DIMS = (16, 24)  # CLIP-L, CLIP-G hidden = projection width
JOINT_DIM = 48  # T5 d_model = transformer joint_attention_dim


def t5_like_tokenizer():
    """A byte-level tokenizer with T5's special tokens (<pad> 0, </s> 1, <unk> 2), eos appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def _t5(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=JOINT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _transformer():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=64,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=JOINT_DIM,
        caption_projection_dim=32,
        pooled_projection_dim=sum(CLIP_DIMS),
        out_channels=16,
        pos_embed_max_size=64,
    )


@functools.lru_cache(maxsize=2)
def _components(seed: int) -> dict:
    from coz.prompts.hygiene import clip_tokenizer

    t5_tok = t5_like_tokenizer()
    with seeded(seed):  # building the twin must not move the caller's RNG
        parts = dict(
            transformer=_transformer(),
            vae=tiny_vae(16, 1.5305, 0.0609),  # SD3's latent channels, scale and shift
            encoders=[
                tiny_clip_text(CLIP_DIMS[0], projection=True),
                tiny_clip_text(CLIP_DIMS[1], projection=True),
                _t5(len(t5_tok)),
            ],
        )
    for module in [parts["transformer"], parts["vae"], *parts["encoders"]]:
        module.eval().requires_grad_(False)
    parts["tokenizers"] = [clip_tokenizer(), clip_tokenizer(), t5_tok]
    return parts


def tiny_sd3_components(seed: int = 0) -> dict:
    """Fresh copies of the seeded tiny SD3 parts (built once per process, then copied):
    ``transformer``, ``vae``, ``encoders`` [CLIP-L, CLIP-G, T5], ``tokenizers`` (shared)."""
    parts = _components(seed)
    return dict(
        transformer=copy.deepcopy(parts["transformer"]),
        vae=copy.deepcopy(parts["vae"]),
        encoders=copy.deepcopy(parts["encoders"]),
        tokenizers=parts["tokenizers"],
    )
