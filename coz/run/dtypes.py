"""One reading of ``dtype=`` options for every model in coz."""

from __future__ import annotations

import torch

from coz.errors import CozError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(
    name: str | torch.dtype,
    device: str | torch.device = "cpu",
    gpu_default: torch.dtype = torch.float16,
    option: str = "dtype",
) -> torch.dtype:
    """A torch dtype from a config value; ``auto`` is float32 on the CPU and ``gpu_default`` elsewhere."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise CozError(f"{option}={name}: use float32, bfloat16 or float16")
        return name
    if str(name) == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else gpu_default
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise CozError(f"{option}={name!r}: use auto, float32, bfloat16 or float16") from None


def cast_keeping_fp32(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` cast to ``dtype`` in place, except the submodules its class keeps in fp32 when
    transformers' ``from_pretrained`` loads it in that dtype: ``_keep_in_fp32_modules`` for fp16,
    ``_keep_in_fp32_modules_strict`` for fp16 and bf16 (T5's ``wo``: its feed-forward output
    overflows in fp16). A wholesale ``.to(dtype)`` would undo what the loader kept."""
    torch.nn.Module.to(module, dtype=dtype)  # nn.Module's own: diffusers' to() warns on casts
    keep: set[str] = set()
    if dtype == torch.float16:
        keep |= set(getattr(module, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    if keep:
        for name, sub in module.named_modules():
            if keep.intersection(name.split(".")):
                sub.float()
    return module
