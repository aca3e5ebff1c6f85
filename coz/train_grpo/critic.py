"""Critic VLMs: a critic scores a candidate prompt against the two views of its pair (paper section 3.3,
R_critic; Algorithm 2, line 5), asked with the paper's critic prompt (Appendix B.2).

A critic returns its raw answers; :mod:`coz.train_grpo.rewards` parses the score. Options (``critic=``):

- ``internvl``: InternVL2.5-8B, the paper's critic (Fig. 6), through its own remote code
  (``trust_remote_code``, behind the pinned ``critic.revision``; :mod:`coz.train_grpo.internvl_compat`
  makes that 4.x-era code run on transformers 5): its ``chat`` with both images, ``<image>``
  placeholders as in B.2, each image tiled as InternVL's recipe does (448-px tiles, ImageNet
  normalisation; a 512 view is one tile);
- ``qwen7b``: Qwen2.5-VL-7B-Instruct (Fig. 7), through its chat template, batched, like the policy;
- ``tiny``: a random-weight Qwen2.5-VL (:mod:`coz.prompts.tiny`), offline: it tests plumbing, its
  answers rarely hold a number (those are counted failures scored 0);
- ``keyword``: a rule, not a model: 100 when the prompt contains one of ``words``, else 0 — for
  checking that the loop learns (the learning test) and for debugging rewards.

Critics are frozen and decode greedily (``do_sample=False``, repetition penalty 1).
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image

from coz.backbones.diffusion.hub import check_available, missing_message
from coz.errors import CozError

log = logging.getLogger("coz.train_grpo")

# Appendix B.2, verbatim; <image> marks where each view goes.
CRITIC_PROMPT = (
    "First Image: <image>\n"
    "Second Image: <image>\n"
    "The second image is a zoom-in of the first image. Please rate the quality of the following "
    "description on how well it describes the second image. Output only a single score between 0 "
    "and 100.\n"
    "Description: {description}\n"
    "Rating (0-100):"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def critic_question(description: str) -> str:
    return CRITIC_PROMPT.format(description=description)


class Critic(ABC):
    """Scores prompts: one free-text answer per (description, first view, second view)."""

    name = "critic"

    @abstractmethod
    def answer(
        self, descriptions: Sequence[str], firsts: Sequence[Image.Image], seconds: Sequence[Image.Image]
    ) -> list[str]: ...


class KeywordCritic(Critic):
    """A rule-based critic: "100" when a description contains one of ``words`` (case-insensitive), else
    "0"."""

    name = "keyword"

    def __init__(self, words: Sequence[str], hit: float = 100.0, miss: float = 0.0) -> None:
        self.words = [str(w).lower() for w in words if str(w)]
        if not self.words:
            raise CozError("critic=keyword needs critic.words=[...] (the words to reward)")
        self.hit, self.miss = hit, miss

    def answer(self, descriptions, firsts, seconds) -> list[str]:
        return [
            f"{self.hit:g}" if any(w in d.lower() for w in self.words) else f"{self.miss:g}"
            for d in descriptions
        ]


def chat_messages(description: str, first: Image.Image, second: Image.Image) -> list[dict]:
    """The critic prompt as one user turn of a chat-template VLM: text and images interleaved."""
    before, between, after = critic_question(description).split("<image>")
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": before},
                {"type": "image", "image": first},
                {"type": "text", "text": between},
                {"type": "image", "image": second},
                {"type": "text", "text": after},
            ],
        }
    ]


class ChatTemplateCritic(Critic):
    """A chat-template VLM (Qwen2.5-VL, or any image-text-to-text model with a processor), batched."""

    def __init__(self, model, processor, max_new_tokens: int = 8, batch_size: int = 8, name: str = "qwen7b"):
        self.model, self.processor = model.eval().requires_grad_(False), processor
        self.processor.tokenizer.padding_side = "left"
        self.max_new_tokens, self.batch_size, self.name = max_new_tokens, batch_size, name

    def render(self, descriptions, firsts, seconds) -> tuple[list[str], list[Image.Image]]:
        texts, images = [], []
        for d, a, b in zip(descriptions, firsts, seconds, strict=True):
            texts.append(
                self.processor.apply_chat_template(
                    chat_messages(d, a, b), tokenize=False, add_generation_prompt=True
                )
            )
            images += [a.convert("RGB"), b.convert("RGB")]
        return texts, images

    @torch.no_grad()
    def answer(self, descriptions, firsts, seconds) -> list[str]:
        answers: list[str] = []
        for i in range(0, len(descriptions), self.batch_size):
            part = slice(i, i + self.batch_size)
            texts, images = self.render(descriptions[part], firsts[part], seconds[part])
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
            inputs = inputs.to(self.model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            out = self.model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
                max_new_tokens=self.max_new_tokens,
            )
            answers += self.processor.batch_decode(
                out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return answers


def internvl_tiles(image: Image.Image, size: int = 448, max_tiles: int = 12, thumbnail: bool = True):
    """InternVL's dynamic tiling: the tile grid (cols x rows <= max_tiles) whose aspect ratio is closest
    to the image's (ties: the larger grid if the image has the pixels for it), plus a size x size
    thumbnail when there is more than one tile. A square 512 view is a single 448 tile."""
    width, height = image.size
    aspect = width / height
    grids = sorted(
        {(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1) if c * r <= max_tiles},
        key=lambda g: g[0] * g[1],
    )
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * size * size * cols * rows:
            best = (cols, rows)
    cols, rows = best
    resized = image.resize((size * cols, size * rows), Image.BICUBIC)
    tiles = [
        resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
        for r in range(rows)
        for c in range(cols)
    ]
    if thumbnail and len(tiles) > 1:
        tiles.append(image.resize((size, size), Image.BICUBIC))
    return tiles


def internvl_pixels(image: Image.Image, size: int = 448, max_tiles: int = 12) -> torch.Tensor:
    """(tiles, 3, size, size) ImageNet-normalised tiles of one image."""
    from coz.geometry import to_tensor

    batch = to_tensor([t.convert("RGB") for t in internvl_tiles(image, size, max_tiles)])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


class InternVLCritic(Critic):
    """InternVL2.5 through its remote code's ``chat``: one call per description (its multi-image
    prompts are not batched by that API), both views in one question."""

    name = "internvl"

    def __init__(self, model, tokenizer, max_new_tokens: int = 8, image_size: int = 448, max_tiles: int = 12):
        self.model, self.tokenizer = model.eval().requires_grad_(False), tokenizer
        self.max_new_tokens, self.image_size, self.max_tiles = max_new_tokens, image_size, max_tiles

    @torch.no_grad()
    def answer(self, descriptions, firsts, seconds) -> list[str]:
        param = next(self.model.parameters())
        answers = []
        for d, a, b in zip(descriptions, firsts, seconds, strict=True):
            tiles = [internvl_pixels(im, self.image_size, self.max_tiles) for im in (a, b)]
            pixels = torch.cat(tiles).to(device=param.device, dtype=param.dtype)
            answers.append(
                self.model.chat(
                    self.tokenizer,
                    pixels,
                    critic_question(d),
                    dict(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1),
                    num_patches_list=[len(t) for t in tiles],
                )
            )
        return answers


def critic_model(cfg: DictConfig) -> tuple[str, str | None] | None:
    """(model id, revision) of a critic that loads weights, None for the rule and the tiny twin."""
    return (cfg.model, cfg.revision) if cfg.name in ("internvl", "qwen7b") else None


def runs_remote_code(cfg: DictConfig) -> bool:
    return cfg.name == "internvl" and cfg.backend == "remote_code"


def check_pinned(cfg: DictConfig) -> None:
    """Remote code runs only behind a pinned commit: a hub id without ``critic.revision`` is refused
    (a local folder is the user's own, trusted as it is)."""
    if not runs_remote_code(cfg) or Path(cfg.model).expanduser().is_dir():
        return
    model_id, revision = cfg.model, cfg.revision or ""
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        what = "unset" if not revision else f"{revision!r} is not a commit hash (a branch or tag can move)"
        raise CozError(
            f"critic.revision: {what}, but critic=internvl runs the remote code of {model_id} in-process; "
            "pin the 40-hex commit hash of that hub repo (the config's default is one)"
        )


def build_critic(cfg: DictConfig, device: str | torch.device) -> Critic:
    name = cfg.name
    if name == "keyword":
        return KeywordCritic(list(cfg.words), cfg.hit, cfg.miss)
    if name == "tiny":
        from coz.prompts.tiny import build_tiny_vlm

        model, processor = build_tiny_vlm(seed=cfg.seed, max_pixels=cfg.max_pixels)
        return ChatTemplateCritic(
            model.to(device), processor, cfg.max_new_tokens, cfg.batch_size, name="tiny"
        )
    if name not in ("internvl", "qwen7b"):
        raise CozError(f"critic={name}: unknown critic (available: internvl, qwen7b, tiny, keyword)")

    from coz.run.dtypes import resolve_dtype

    model_id, revision = cfg.model, cfg.revision
    remote_code = runs_remote_code(cfg)
    check_pinned(cfg)
    check_available(model_id, revision, "critic.model")
    dtype = resolve_dtype(cfg.dtype, device, gpu_default=torch.bfloat16, option="critic.dtype")
    try:
        if remote_code:
            from transformers import AutoTokenizer

            from coz.train_grpo.internvl_compat import load_internvl

            if not cfg.trust_remote_code:
                raise CozError(
                    "critic=internvl runs InternVL's own code from its hub repository: set "
                    "critic.trust_remote_code=true (and pin critic.revision), or critic.backend=hf "
                    "with a transformers-native (-hf) conversion"
                )
            kwargs = dict(revision=revision, trust_remote_code=True)
            tokenizer = AutoTokenizer.from_pretrained(model_id, use_fast=False, **kwargs)
            model = load_internvl(model_id, revision, dtype)  # its code, made to run on transformers 5
            return InternVLCritic(
                model.to(device), tokenizer, cfg.max_new_tokens, cfg.image_size, cfg.max_tiles
            )
        from transformers import AutoModelForImageTextToText, AutoProcessor

        extra = {"max_pixels": cfg.max_pixels} if cfg.max_pixels else {}
        processor = AutoProcessor.from_pretrained(model_id, revision=revision, **extra)
        model = AutoModelForImageTextToText.from_pretrained(model_id, revision=revision, dtype=dtype)
        return ChatTemplateCritic(model.to(device), processor, cfg.max_new_tokens, cfg.batch_size, name=name)
    except OSError as err:
        raise CozError(missing_message(model_id, revision, "critic.model")) from err
