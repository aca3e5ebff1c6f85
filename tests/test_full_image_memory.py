"""Full-image SR keeps memory flat in the tile (README, Full-image SR): from a small to a large image,
the step's peak resident memory grows by the image-sized buffers only, not by anything per tile.

Measured in a fresh subprocess (Linux: ``/proc/self/clear_refs`` resets the peak mark, ``VmHWM``
reads it) with the model-free bicubic backbone, whose own working memory is a few tile-sized
tensors; the bound comes from the sizes alone (``coz.bench.full.image_buffers_mib`` documents the
26.25 bytes per output pixel that grow), plus 32 MiB, far below what keeping every tile costs
(a float32 copy of each of the 64 tiles of the large image is 192 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import json, sys
from PIL import Image
from coz.backbones.interp import Interpolation
from coz.chain import ZoomChain
from coz.full_image import FullImageOptions
from coz.prompts.base import NullPrompt

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB

photo = Image.open(sys.argv[1]).convert("RGB")
chain = ZoomChain("full", Interpolation("bicubic"), NullPrompt(), steps=1, full=FullImageOptions())
chain.run([photo.resize((128, 128))])  # warm-up: every kernel and tile shape once
out = {}
for size in map(int, sys.argv[2:]):
    image = photo.resize((size, size), Image.LANCZOS)
    open("/proc/self/clear_refs", "w").write("5")  # the peak mark back to the current RSS
    baseline = status("VmRSS")
    zoom = chain.run([image])[0]
    out[size] = {"peak_above_baseline": status("VmHWM") - baseline, "tiles": len(zoom.steps[0].tiles)}
    del zoom
print("RESULT " + json.dumps(out))
"""

SMALL, LARGE = 256, 768


def image_buffers_mib(size: int) -> float:
    """Bytes per output pixel of the buffers that must grow with the image: float32 accumulator
    (12) and weights (4), the 8-bit result as a tensor, its copy and PIL's RGBX (3 + 3 + 4), the
    LANCZOS upsampling (PIL 4) and the input (4 / 16)."""
    return (4 * size) ** 2 * (12 + 4 + 3 + 3 + 4 + 4 + 4 / 16) / 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset peak RSS")
def test_peak_memory_grows_by_the_image_buffers_not_by_the_tiles(samples):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(samples[0]), str(SMALL), str(LARGE)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    small, large = result[str(SMALL)], result[str(LARGE)]
    assert large["tiles"] >= 49 > small["tiles"]  # many more tiles: anything per tile would show
    growth = large["peak_above_baseline"] - small["peak_above_baseline"]
    allowed = image_buffers_mib(LARGE) - image_buffers_mib(SMALL) + 32
    assert growth < allowed, (small, large, f"grew {growth:.0f} MiB, allowed {allowed:.0f}")
