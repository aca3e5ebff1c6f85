"""Any SR network spandrel recognises, as a zoom-chain backbone (``backbone=spandrel backbone.weights=FILE``).

spandrel (chaiNNer, MIT) detects dozens of architectures (ESRGAN, SPAN, SwinIR, HAT, DAT,
RealCUGAN, Compact, ...) and their hyper-parameters from a plain state dict. We read the file
ourselves, safely (safetensors, or ``torch.load(weights_only=True)``), let spandrel build the
network, and refuse in one line a file it cannot detect, a model that is not an RGB image-to-image
SR model, or one whose scale is not the zoom's per-step factor. PyTorch only (CPU or GPU): ncnn
needs a graph per architecture.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from coz.backbones.cnn.backbone import CnnBackbone
from coz.errors import CozError
from coz.run.dtypes import resolve_dtype


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.ckpt`` file, on the CPU, never unpickling code."""
    option = f"backbone.weights={path}"
    if not path.is_file():
        raise CozError(f"{option}: file not found")
    from coz.run.weights import refuse_nonfinite, safe_load

    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".ckpt"):
        raise CozError(f"{option}: unsupported file type {suffix!r}; use .safetensors, .pth, .pt or .ckpt")
    state = safe_load(option, path)
    if not isinstance(state, Mapping):
        raise CozError(f"{option}: holds a {type(state).__name__}, not a state dict")
    refuse_nonfinite(option, state)
    return dict(state)


def load_descriptor(path: str | Path, scale: int):
    """spandrel's ImageModelDescriptor for the weights at ``path``, checked to magnify RGB by ``scale``."""
    import spandrel

    path = Path(path).expanduser()
    option = f"backbone.weights={path}"
    state = spandrel.canonicalize_state_dict(read_state_dict(path))
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise CozError(f"{option}: spandrel does not recognise this architecture") from None
    except Exception as err:  # a recognised architecture whose tensors do not fit it
        raise CozError(f"{option}: spandrel could not build it ({type(err).__name__}: {err})") from None
    arch = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise CozError(f"{option}: a {arch} {descriptor.purpose} model, not single-image SR")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise CozError(
            f"{option}: a {arch} model with {descriptor.input_channels} input and "
            f"{descriptor.output_channels} output channels; the zoom needs RGB in and out"
        )
    if descriptor.scale != scale:
        raise CozError(
            f"{option}: a {descriptor.scale}x {arch} model, but zoom.factor={scale} needs a {scale}x one"
        )
    return descriptor


def resolve_spandrel_dtype(descriptor, dtype: str | torch.dtype, device: torch.device) -> str | torch.dtype:
    """``auto`` on a GPU: float16 where the architecture supports it, else bfloat16, else float32."""
    if str(dtype) != "auto" or device.type == "cpu":
        return dtype
    if descriptor.supports_half:
        return torch.float16
    return torch.bfloat16 if descriptor.supports_bfloat16 else torch.float32


class SpandrelBackbone(CnnBackbone):
    """A spandrel-built network behind the :class:`Backbone` interface; PyTorch only."""

    config_name = "spandrel"

    def __init__(
        self,
        descriptor,
        *,
        name: str = "spandrel",
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.name = name
        dtype = resolve_spandrel_dtype(descriptor, dtype, torch.device(device))
        supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
        if not supported.get(resolve_dtype(dtype, device, option="backbone.dtype"), True):
            raise CozError(
                f"backbone.dtype={dtype}: spandrel's {descriptor.architecture.name} does not support it"
            )
        super().__init__(
            descriptor.model,
            scale=descriptor.scale,
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            runtime="torch",
        )

    @classmethod
    def from_config(
        cls,
        weights: str | Path,
        scale: int = 4,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
    ) -> SpandrelBackbone:
        if weights is None or str(weights) in ("", "None", "auto"):
            raise CozError(
                "backbone=spandrel needs backbone.weights=FILE (a .pth or .safetensors spandrel recognises)"
            )
        descriptor = load_descriptor(weights, int(scale))
        name = f"spandrel-{descriptor.architecture.id}-{Path(weights).stem}"
        return cls(descriptor, name=name, device=device, dtype=dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(x)  # pads to the architecture's size requirements and crops back
