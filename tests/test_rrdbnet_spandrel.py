"""coz's hand-written RRDBNet computes what spandrel's ESRGAN computes with the same weights: bit for bit
in inference, to rounding under autograd."""

from __future__ import annotations

import pytest
import torch

from coz.backbones.realesrgan import ensure_cached_weights, load_weights
from coz.backbones.rrdbnet import RRDBNet


@pytest.mark.slow  # three x4plus forwards: about 10 s of CPU
def test_x4plus_outputs_identical_to_spandrel_esrgan():
    from spandrel.architectures.ESRGAN import ESRGANArch

    state = load_weights(ensure_cached_weights())
    ours = RRDBNet().eval()
    ours.load_state_dict(state)
    theirs = ESRGANArch().load(dict(state)).model.eval()  # BasicSR keys, converted by spandrel
    fmt = torch.channels_last  # as RealESRGAN runs PyTorch on the CPU
    ours.to(memory_format=fmt), theirs.to(memory_format=fmt)
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=fmt)
    with torch.inference_mode():  # our inference form (one preallocated dense buffer per block)
        fast = ours(x)
        reference = theirs(x)
    assert fast.shape == (1, 3, 48, 64)
    assert torch.equal(fast, reference)
    with torch.enable_grad():  # our autograd form (torch.add with alpha): equal up to rounding
        assert (ours(x) - reference).abs().max() < 1e-5
