"""The Python API's promise "seeds are reset from seed= at every call": after each call the global
generators stand where a fresh seed puts them, whatever ran between calls."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

import coz


def fresh_draws(seed: int) -> tuple[list[float], list[float], float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return draws()


def draws() -> tuple[list[float], list[float], float]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def test_every_zoom_call_reseeds_from_seed():
    # bicubic draws no random numbers, so each call must leave the generators exactly as freshly seeded
    zoomer = coz.Zoomer(backbone="bicubic", prompt="none", steps=1, seed=7, **{"zoom.size": 64})
    image = Image.new("RGB", (64, 64), "tan")
    expected = fresh_draws(7)
    for junk_seed in (123, 456):  # whatever the caller did with the generators in between
        fresh_draws(junk_seed)
        zoomer.zoom(image)
        assert draws() == expected
