"""Prompt extraction with Qwen2.5-VL (paper section 3.2; docs/fidelity.md "Prompts").

AR-2 (``zoom=recursive_multiscale``): the instruction is the SYSTEM turn, the user turn holds two
images and no text: the previous 512 scale-state, then the bicubic zoom of its center crop. AR-1
(``zoom=recursive``, ``onestep``, or ``multiscale: false``): system "What is in this image? Give
me a set of words.", user turn = the current view. Decoding is greedy. All views of a call go
through ONE ``generate`` with left padding, which gives the same tokens as one-by-one extraction.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from coz.errors import CozError
from coz.prompts.base import PromptExtractor

log = logging.getLogger("coz.prompts")

AR2_INSTRUCTION = (
    "The second image is a zoom-in of the first image. Based on this knowledge, "
    "what is in the second image? Give me a set of words."
)
AR1_INSTRUCTION = "What is in this image? Give me a set of words."
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


def build_messages(view: Image.Image, previous: Image.Image | None) -> list[dict]:
    """The authors' chat messages for one view (AR-2 when ``previous`` is given, else AR-1)."""
    if previous is None:
        return [
            {"role": "system", "content": AR1_INSTRUCTION},
            {"role": "user", "content": [{"type": "image", "image": view}]},
        ]
    return [
        {"role": "system", "content": AR2_INSTRUCTION},
        {"role": "user", "content": [{"type": "image", "image": previous}, {"type": "image", "image": view}]},
    ]


class VLMPrompts(PromptExtractor):
    """Qwen2.5-VL (any size, optionally with a LoRA adapter) as the prompt extractor."""

    name = "vlm"

    def __init__(
        self, model, processor, max_new_tokens: int = 32, multiscale: bool = True, identity: str = "vlm"
    ) -> None:
        self.model, self.processor = model, processor
        self.processor.tokenizer.padding_side = "left"  # batched generation appends after the prompt
        self.max_new_tokens = int(max_new_tokens)
        self.multiscale = multiscale
        self.identity = identity  # what the prompt cache keys on besides the pixels

    def render(self, views: list[Image.Image], previous: list[Image.Image | None]) -> tuple[list[str], list]:
        """The chat texts and the images in the order their placeholders appear."""
        if not self.multiscale:
            previous = [None] * len(views)
        texts, images = [], []
        for view, prev in zip(views, previous, strict=True):
            messages = build_messages(view, prev)
            texts.append(
                self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
            images.extend(part["image"] for part in messages[1]["content"])
        return texts, [im.convert("RGB") for im in images]

    def extract(self, views: list[Image.Image], previous: list[Image.Image | None]) -> list[str]:
        import torch

        if not views:
            return []
        texts, images = self.render(views, previous)
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
        return self.processor.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def check_source(model_id: str, revision: str | None) -> bool:
    """Whether ``prompt.model`` names a local folder (True) or a hub id (False): one CozError if it
    is neither, or a hub id that is not cached while the hub cannot be reached (no model loads)."""
    local = Path(model_id).expanduser()
    looks_local = local.exists() or model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1
    if looks_local and not local.is_dir():
        raise CozError(
            f"prompt.model={model_id}: no such folder (give a Hugging Face id such as {DEFAULT_MODEL} "
            f"or a folder holding a saved Qwen2.5-VL)"
        )
    if not looks_local:  # cached, or a hub that answers (a download ahead: fail fast without network)
        from coz.backbones.diffusion.hub import check_available

        check_available(model_id, revision, "prompt.model")
    return looks_local


def load_qwen_vl(model_id: str, revision: str | None, dtype, device: str, max_pixels: int | None = None):
    """(model, processor) from a Hugging Face id (cache, or the hub when online) or a local folder.

    A model that cannot be found is one CozError naming it and how to provide it; with
    ``HF_HUB_OFFLINE=1`` nothing touches the network.
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    local = Path(model_id).expanduser()
    looks_local = check_source(model_id, revision)
    source = str(local) if looks_local else model_id
    kwargs = {} if looks_local else {"revision": revision}
    try:
        processor = AutoProcessor.from_pretrained(
            source, **kwargs, **({"max_pixels": max_pixels} if max_pixels else {})
        )
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as err:
        from coz.backbones.diffusion.hub import missing_message

        raise CozError(missing_message(model_id, revision, "prompt.model")) from err
    return model.to(device).eval(), processor
