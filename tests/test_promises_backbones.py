"""Backbone defaults checked against the authors' releases and the README, without a GPU: S3Diff's
colour fix is the wavelet one (its inference script's default), and a CNN's ``dtype=auto`` is float16
off the CPU (the meta device stands in for a GPU: no memory, same rule) and float32 on it."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from coz.backbones.cnn.backbone import CnnBackbone


def test_s3diff_colour_fix_is_wavelet_by_default(compose_zoom):
    from coz.backbones.diffusion.s3diff import S3Diff

    # the class's own default (read from its signature: building even the tiny twin takes half a minute)
    assert inspect.signature(S3Diff).parameters["color_fix"].default == "wavelet"
    for backbone in ("s3diff", "tiny_s3diff"):  # and what backbone=s3diff composes
        assert compose_zoom([f"backbone={backbone}"]).backbone.color_fix == "wavelet"


def test_a_cnn_runs_float16_off_the_cpu_and_float32_on_it():
    off_cpu = CnnBackbone(nn.Conv2d(3, 48, 3, padding=1), scale=4, device="meta", runtime="torch")
    assert off_cpu.dtype == torch.float16
    assert next(off_cpu.model.parameters()).dtype == torch.float16
    on_cpu = CnnBackbone(nn.Conv2d(3, 48, 3, padding=1), scale=4, device="cpu", runtime="torch")
    assert on_cpu.dtype == torch.float32
