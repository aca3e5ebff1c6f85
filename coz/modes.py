"""The zoom chain's modes (docs/fidelity.md, "The zoom chain"), apart from the chain itself so that a
config check (:mod:`coz.run.validate`) needs no torch: ``python -m coz.zoom`` refuses a bad value
before it imports torch (seconds)."""

from __future__ import annotations

from PIL import Image

# mode -> what a step does
MODES = ("recursive_multiscale", "recursive", "onestep", "nearest", "bicubic", "full")
# the modes without a model: each step is this PIL resampling of the center crop
INTERPOLATION_MODES = {"nearest": Image.NEAREST, "bicubic": Image.BICUBIC}
