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
