"""RRDBNet, the generator of ESRGAN and Real-ESRGAN, as spandrel builds it, under BasicSR's names.

References:
- X. Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks",
  ECCV Workshops 2018 (residual-in-residual dense blocks, residual scaling).
- X. Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
  Synthetic Data", ICCV Workshops 2021 (the x4plus weights this module is used with).

The network is spandrel's ESRGAN (``spandrel.architectures.ESRGAN.ESRGAN``); coz writes none of its
layers. spandrel names its parameters in the old-ESRGAN layout (``model.0``,
``model.1.sub.{i}.RDB{r}.conv{c}.0``, ``model.1.sub.{num_block}``, ``model.3`` ...). Every file coz
reads or writes keeps BasicSR's names instead (``conv_first``, ``body.{i}.rdb{r}.conv{c}``,
``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``): the cached ncnn conversion,
``coz.train_sr``'s exports and checkpoints, the ncnn runtime's conv order. :func:`from_basicsr`
and :func:`to_basicsr` translate between the two, losslessly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from coz.run.weights import mismatch

SCALE = 4
LRELU_SLOPE = 0.2
GROWTH = 32  # spandrel fixes the dense blocks' growth channels at ESRGAN's 32

# spandrel's top-level sequence at 4x: 0 conv_first, 1 trunk (RRDBs + conv_body), 2 upsample,
# 3 conv_up1, 4 lrelu, 5 upsample, 6 conv_up2, 7 lrelu, 8 conv_hr, 9 lrelu, 10 conv_last.
_TOP = {
    "conv_first": "model.0",
    "conv_up1": "model.3",
    "conv_up2": "model.6",
    "conv_hr": "model.8",
    "conv_last": "model.10",
}
_BASICSR_TOP = {theirs: ours for ours, theirs in _TOP.items()}
_SPANDREL_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)")
_SPANDREL_TRUNK = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)")
_BASICSR_RDB = re.compile(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)")


def rrdbnet(
    state_dict: Mapping[str, torch.Tensor] | None = None, *, num_feat: int = 64, num_block: int = 23
) -> nn.Module:
    """spandrel's ESRGAN at 4x: ``num_feat`` features, ``num_block`` RRDBs (defaults: Real-ESRGAN x4plus).

    With ``state_dict`` (BasicSR names), its tensors become the parameters (no random init first);
    a missing, unexpected or misshapen tensor is a one-line ``ValueError`` naming it.
    ``forward`` maps (B, 3, h, w) RGB in [0, 1] to (B, 3, 4h, 4w), not clamped.
    """
    from spandrel.architectures.ESRGAN import ESRGAN

    if state_dict is None:
        return ESRGAN(num_filters=num_feat, num_blocks=num_block, scale=SCALE)
    with torch.device("meta"):  # shapes only: every parameter comes from state_dict
        model = ESRGAN(num_filters=num_feat, num_blocks=num_block, scale=SCALE)
    expected = {basicsr_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    if problem := mismatch(expected, state_dict):
        raise ValueError(f"not a {num_feat}-feature, {num_block}-block RRDBNet: {problem}")
    model.load_state_dict(from_basicsr(state_dict, num_block), strict=True, assign=True)
    return model


def basicsr_name(key: str) -> str:
    """The BasicSR name of one of spandrel's ESRGAN state-dict keys (``model.1.sub.0.RDB1.conv1.0.weight``
    -> ``body.0.rdb1.conv1.weight``)."""
    if m := _SPANDREL_RDB.fullmatch(key):
        block, rdb, conv, part = m.groups()
        return f"body.{block}.rdb{rdb}.conv{conv}.{part}"
    if m := _SPANDREL_TRUNK.fullmatch(key):  # the trunk's last entry, after the RRDBs
        return f"conv_body.{m.group(2)}"
    prefix, _, part = key.rpartition(".")
    if prefix in _BASICSR_TOP:
        return f"{_BASICSR_TOP[prefix]}.{part}"
    raise ValueError(f"{key!r} is not a parameter of a 4x ESRGAN (RRDBNet)")


def to_basicsr(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """spandrel's ESRGAN state dict under BasicSR's names (the same tensors, in the same order)."""
    return {basicsr_name(k): v for k, v in state_dict.items()}


def from_basicsr(state_dict: Mapping[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """A BasicSR RRDBNet state dict under spandrel's names; any other key passes through unchanged."""
    spandrel_prefix = {**_TOP, "conv_body": f"model.1.sub.{num_block}"}
    out = {}
    for key, value in state_dict.items():
        prefix, _, part = key.rpartition(".")
        if m := _BASICSR_RDB.fullmatch(key):
            block, rdb, conv, part = m.groups()
            key = f"model.1.sub.{block}.RDB{rdb}.conv{conv}.0.{part}"
        elif prefix in spandrel_prefix:
            key = f"{spandrel_prefix[prefix]}.{part}"
        out[key] = value
    return out


def conv_names(num_block: int = 23) -> list[str]:
    """Every conv's BasicSR state-dict prefix in forward order (the order of the ncnn graph)."""
    names = ["conv_first"]
    for i in range(num_block):
        names += [f"body.{i}.rdb{r}.conv{c}" for r in (1, 2, 3) for c in range(1, 6)]
    return [*names, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def conv_activation(name: str) -> float | None:
    """LeakyReLU slope applied right after conv ``name`` (a BasicSR prefix), or None for a linear conv."""
    last = name.rsplit(".", 1)[-1]
    if last in ("conv1", "conv2", "conv3", "conv4", "conv_up1", "conv_up2", "conv_hr"):
        return LRELU_SLOPE
    return None
