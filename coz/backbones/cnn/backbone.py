"""What every feed-forward SR network (Real-ESRGAN, SPAN, any spandrel model) shares as a backbone:
a PyTorch module, optionally mirrored by the ncnn runtime for the float32 CPU forward.

Prompts are ignored: these networks take no text.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from coz.backbones.base import Backbone
from coz.backbones.cnn.ncnn_runtime import NcnnNet
from coz.run.dtypes import resolve_dtype

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "ncnn", "torch")


class CnnBackbone(Backbone):
    """A PyTorch SR module behind the :class:`Backbone` interface.

    ``runtime``: on the CPU in float32, ``auto`` runs the weights through ncnn where the subclass
    has an ncnn graph for them (:meth:`_ncnn_net`) and falls back to PyTorch, with a one-line
    warning, where ncnn cannot run; ``torch`` forces PyTorch; ``ncnn`` requires ncnn. GPUs always
    run PyTorch. ``dtype="auto"`` is float16 on a GPU, float32 on the CPU.
    ``channels_last=None`` picks NHWC for PyTorch on the CPU (10-15% faster than NCHW there).
    """

    takes_upsampled_input = False
    ncnn_speedup = "about 1.4x"  # for the fallback warning: what ncnn buys over PyTorch here

    def __init__(
        self,
        model: nn.Module,
        *,
        scale: int,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "auto",
        channels_last: bool | None = None,
        runtime: str = "auto",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"backbone.runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
        self.model = model.eval().requires_grad_(False)
        self.scale = scale
        self._dtype_option = dtype
        self._channels_last_option = channels_last
        self.runtime_option = runtime
        self._device = torch.device("cpu")
        self.channels_last = False
        self.ncnn: NcnnNet | None = None
        self.to(device)

    def _ncnn_unavailable(self) -> str | None:
        """None if :meth:`_ncnn_net` can build here, else why not (a subclass without ncnn: always)."""
        return "no ncnn graph for this model"

    def _ncnn_net(self) -> NcnnNet:
        """The ncnn mirror of ``self.model``'s current weights."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> CnnBackbone:
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

    def _ncnn_runtime(self) -> NcnnNet | None:
        if self.runtime_option == "torch":
            return None
        if reason := self._ncnn_unavailable():
            if self.runtime_option == "ncnn":
                raise ValueError(f"backbone.runtime=ncnn: {reason}")
            log.warning(
                "%s: ncnn CPU runtime unavailable (%s); using PyTorch (%s slower)",
                self.config_name,
                reason,
                self.ncnn_speedup,
            )
            return None
        return self._ncnn_net()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The PyTorch forward, (B, 3, h, w) -> (B, 3, sh, sw), not clamped."""
        return self.model(x)

    @property
    def config_name(self) -> str:
        """The ``backbone=`` value, for messages."""
        return self.name

    @property
    def device(self) -> torch.device:
        return self._device

    def upscale(self, images: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, 3, sh, sw) in [0, 1], same dtype and device as ``images``.

        The result is an ordinary (not inference-mode) contiguous tensor.
        """
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected a float (B, 3, h, w) batch, got {tuple(images.shape)} {images.dtype}")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode():
            if self.ncnn is not None:
                out = self.ncnn(images).clamp_(0.0, 1.0)  # (B, 3, sh, sw) float32 on the CPU
            else:
                x = images.to(device=self._device, dtype=self.dtype, memory_format=fmt)  # (B, 3, h, w)
                out = self._forward(x).clamp_(0.0, 1.0)  # (B, 3, sh, sw)
        # Outside inference mode, so the caller gets a normal tensor it may modify in place.
        return out.to(
            device=images.device, dtype=images.dtype, memory_format=torch.contiguous_format, copy=True
        )
