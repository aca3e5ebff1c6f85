"""The schema of each ``prompt=`` option (conf/shared/prompt/): the keys its YAML may hold, their
types and what values they allow (:mod:`coz.run.schema`). Values and their meaning stay in the YAML."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from coz.run.schema import number, one_of, whole

DTYPE = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


@dataclass
class NoPrompt:  # null, none
    name: str = MISSING


@dataclass
class Extracted:
    """What every extractor shares: text hygiene, the CLIP-length check and the prompt cache."""

    name: str = MISSING
    clean: bool = False  # unset: the text verbatim, as the released vlm and dape settings pass it
    check_clip: bool = MISSING
    cache: str = one_of("none", "memory", "disk")
    cache_dir: str | None = MISSING


@dataclass
class VLM(Extracted):
    dtype: str = one_of(*DTYPE)
    max_new_tokens: int | str = whole(1, auto=True)
    max_pixels: int | None = whole(1, null=True)
    multiscale: bool = MISSING
    adapter: str | None = MISSING
    merge_adapter: bool = MISSING


@dataclass
class HubVLM(VLM):
    model: str = MISSING
    revision: str | None = MISSING


@dataclass
class TinyVLM(VLM):
    seed: int = whole(0)
    shape: str = one_of("tiny", "3b")


@dataclass
class DAPE(Extracted):
    ram_weights: str | None = MISSING
    dape_weights: str | None = MISSING
    tags: str | None = MISSING
    thresholds: str | None = MISSING
    dtype: str = one_of(*DTYPE)
    image_size: int = whole(32)


@dataclass
class TinyDAPE(Extracted):
    seed: int = whole(0)
    threshold: float = number(0, 1)


PROMPTS = {
    "null": NoPrompt,
    "none": NoPrompt,
    "vlm": HubVLM,
    "vlm_ar1": HubVLM,
    "tiny_vlm": TinyVLM,
    "dape": DAPE,
    "tiny_dape": TinyDAPE,
}
