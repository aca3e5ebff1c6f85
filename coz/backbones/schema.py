"""The schema of each ``backbone=`` option (conf/shared/backbone/): the keys its YAML may hold, their
types and what values they allow (:mod:`coz.run.schema`). Values and their meaning stay in the YAML."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from coz.run.schema import number, one_of, whole

DTYPE = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
COLOR_FIX = ("none", "adain", "wavelet")
RUNTIME = ("auto", "ncnn", "torch")


@dataclass
class Interpolation:  # nearest, bicubic
    name: str = MISSING


@dataclass
class RealESRGAN:
    name: str = MISSING
    weights: str = MISSING
    dtype: str = one_of(*DTYPE)
    runtime: str = one_of(*RUNTIME)


@dataclass
class Span(RealESRGAN):
    model: str = MISSING


@dataclass
class Spandrel:
    name: str = MISSING
    weights: str | None = MISSING  # required: checked with its file when the model loads
    scale: int = whole(2)
    dtype: str = one_of(*DTYPE)


@dataclass
class SD3:
    name: str = MISSING
    transformer_lora: str | None = MISSING
    vae_encoder: str | None = MISSING
    weights: str | None = MISSING
    lora_rank: int = whole(1)
    dtype: str = one_of(*DTYPE)
    text_dtype: str = one_of(*DTYPE)
    offload_text_encoders: bool = MISSING
    drop_t5: bool = MISSING
    adaln_fp16: bool = MISSING
    latent_shift: str = one_of("test", "train", "none")
    color_fix: str = one_of(*COLOR_FIX)
    seed: int = whole(0)


@dataclass
class HubSD3(SD3):
    model: str = MISSING


@dataclass
class TinySD3(SD3):
    model_seed: int = whole(0)


@dataclass
class SD21:
    name: str = MISSING
    osediff_pkl: str | None = MISSING
    weights: str | None = MISSING
    lora_rank: int = whole(1)
    vae_lora_rank: int = whole(1)
    dtype: str = one_of(*DTYPE)
    text_dtype: str | None = one_of(*DTYPE, null=True)
    prompt_format: str = one_of("osediff", "coz")
    color_fix: str = one_of(*COLOR_FIX)
    seed: int = whole(0)


@dataclass
class HubSD21(SD21):
    model: str = MISSING


@dataclass
class TinySD21(SD21):
    model_seed: int = whole(0)


@dataclass
class S3Diff:
    name: str = MISSING
    pretrained_path: str | None = MISSING
    de_net_path: str | None = MISSING
    weights: str | None = MISSING
    lora_rank_unet: int = whole(1)
    lora_rank_vae: int = whole(1)
    dtype: str = one_of(*DTYPE)
    guidance_scale: float = number(0)
    positive_prompt: str = MISSING
    negative_prompt: str = MISSING
    color_fix: str = one_of(*COLOR_FIX)
    input_resize: str = one_of("bilinear", "view")
    seed: int = whole(0)


@dataclass
class HubS3Diff(S3Diff):
    model: str = MISSING


@dataclass
class TinyS3Diff(S3Diff):
    model_seed: int = whole(0)


BACKBONES = {
    "nearest": Interpolation,
    "bicubic": Interpolation,
    "realesrgan": RealESRGAN,
    "span": Span,
    "spandrel": Spandrel,
    "sd3": HubSD3,
    "tiny_sd3": TinySD3,
    "sd21": HubSD21,
    "tiny_sd21": TinySD21,
    "s3diff": HubS3Diff,
    "tiny_s3diff": TinyS3Diff,
}
