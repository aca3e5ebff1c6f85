"""``python -m coz.bench.full`` (``make bench``, section ``full``): peak memory of full-image SR.

Claim under test: peak memory is bounded by the tile size, not the image size, apart from the
buffers that must hold the image itself. Each measurement is one fresh process per backbone and
image size: build the backbone, run one full-image step on a warm-up image (so every tile shape
has met its kernels and buffers), reset the peak-RSS mark (``/proc/self/clear_refs``), then run
one full-image step (``zoom=full`` defaults, null prompts) on an NxN crop of a sample photo and
record:

- ``peak_rss_above_baseline_mib``: the step's peak resident memory over what the process held
  before it (models, warm-up leftovers);
- ``image_buffers_mib``: what the image-sized buffers of coz.full_image must take at the step's
  peak (:func:`image_buffers_mib`), computed from the sizes;
- ``peak_growth_mib`` from the small to the large image, against ``image_buffers_growth_mib``,
  and the same growth with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_=65536``), which
  shows how much of the rest is freed tile memory the allocator keeps in its heap;
- ``largest_model_input``: the largest tensor any model call received (it is set by the tiles);
- ``cuda_peak_mib`` on a GPU (``torch.cuda.max_memory_allocated`` during the step).

Writes ``experiments/bench/full.json`` and ``full.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "65536"}

# The child: one backbone, one size. Prints one JSON line.
CHILD = r"""
import json, sys, time
import torch
from PIL import Image
from coz.chain import ZoomChain
from coz.full_image import FullImageOptions
from coz.prompts.base import NullPrompt

backbone_name, size, warm, sample, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")

if backbone_name == "tiny_sd3":
    from coz.backbones.diffusion.sd3 import OSEDiffSD3
    backbone = OSEDiffSD3.tiny().to(device)
    watched = ("encode", "decode", "predict_velocity")
else:
    from coz.backbones.cnn.realesrgan import RealESRGAN
    backbone = RealESRGAN.from_config(device=device)
    watched = ("upscale",)
largest = {"numel": 0, "shape": None}
for name in watched:
    fn = getattr(backbone, name)
    def wrapped(*args, _fn=fn, **kwargs):
        x = args[0]
        if x.numel() > largest["numel"]:
            largest.update(numel=x.numel(), shape=list(x.shape))
        return _fn(*args, **kwargs)
    setattr(backbone, name, wrapped)

photo = Image.open(sample).convert("RGB")
chain = ZoomChain("full", backbone, NullPrompt(), steps=1, full=FullImageOptions())
chain.run([photo.resize((warm, warm), Image.LANCZOS)])  # warm-up: every tile shape once
largest.update(numel=0, shape=None)
image = photo.resize((size, size), Image.LANCZOS)
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
baseline = status("VmRSS")
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
zoom = chain.run([image])[0]
seconds = time.perf_counter() - start
step = zoom.steps[0]
out = {
    "input": size,
    "output": list(step.state.size),
    "tiles": len(step.tiles),
    "seconds": round(seconds, 2),
    "baseline_rss_mib": round(baseline, 1),
    "peak_rss_mib": round(status("VmHWM"), 1),
    "peak_mark_reset": reset,
    "largest_model_input": largest["shape"],
}
if device.startswith("cuda"):
    out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
print("RESULT " + json.dumps(out))
"""


def image_buffers_mib(size: int) -> float:
    """The image-sized buffers a full-image step holds at its peak, from the sizes alone, in bytes
    per output pixel: the blended result is converted to 8 bits while the float32 accumulator
    (12) is alive, as a uint8 tensor (3), its contiguous copy (3) and the PIL state (4, PIL keeps
    RGB in 4 bytes), next to the upsampled image (PIL, 4) and x0 (1/16 of the pixels, 4): 26.25.
    (Blending itself holds a little less: accumulator and weights 16, ``up`` as PIL and uint8 7,
    the 16-channel latents 1.)"""
    return (4 * size) ** 2 * (12 + 3 + 3 + 4 + 4 + 4 / 16) / 2**20


def measure(backbone: str, size: int, warm: int, sample: Path, device: str, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, backbone, str(size), str(warm), str(sample), device],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["peak_rss_above_baseline_mib"] = round(result["peak_rss_mib"] - result["baseline_rss_mib"], 1)
    result["image_buffers_mib"] = round(image_buffers_mib(size), 1)
    return result


def bench_backbone(backbone: str, sizes: list[int], warm: int, sample: Path, device: str) -> dict:
    runs = [measure(backbone, size, warm, sample, device) for size in sizes]
    # the same with glibc's mmap threshold pinned at 64 KiB: freed tile-sized blocks go back to
    # the system at once instead of lingering in the heap (shows what the allocator retains)
    pinned = [measure(backbone, s, warm, sample, device, env=PINNED_MMAP) for s in (sizes[0], sizes[-1])]
    small, large = runs[0], runs[-1]
    grew = large["peak_rss_above_baseline_mib"] - small["peak_rss_above_baseline_mib"]
    grew_pinned = pinned[-1]["peak_rss_above_baseline_mib"] - pinned[0]["peak_rss_above_baseline_mib"]
    buffers_grew = large["image_buffers_mib"] - small["image_buffers_mib"]
    section = {
        "what": f"one zoom=full step (defaults, null prompts) with {backbone} on {device}, input "
        + " and ".join(f"{s}x{s}" for s in sizes)
        + "; fresh process per size, after a warm-up step, peak RSS over the pre-step baseline",
        "runs": runs,
        "runs_pinned_mmap": pinned,
        "sizes": [f"{r['input']} -> {r['output'][0]}x{r['output'][1]} ({r['tiles']} tiles)" for r in runs],
        "peak_rss_above_baseline_mib": [r["peak_rss_above_baseline_mib"] for r in runs],
        "image_buffers_mib": [r["image_buffers_mib"] for r in runs],
        "seconds": [r["seconds"] for r in runs],
        "largest_model_input": [r["largest_model_input"] for r in runs],
        "same_largest_model_input": len({json.dumps(r["largest_model_input"]) for r in runs}) == 1,
        "output_pixels_ratio": round((large["input"] / small["input"]) ** 2, 2),
        "peak_growth_mib": round(grew, 1),
        "image_buffers_growth_mib": round(buffers_grew, 1),
        "peak_growth_mib_pinned_mmap": round(grew_pinned, 1),
        "working_memory_at_smallest_mib": round(
            small["peak_rss_above_baseline_mib"] - small["image_buffers_mib"], 1
        ),
    }
    if "cuda_peak_mib" in large:
        section["cuda_peak_mib"] = [r["cuda_peak_mib"] for r in runs]
    return section


def main(argv: list[str] | None = None) -> dict:
    import torch

    from coz.bench.report import write_report
    from coz.samples import write_samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd3-sizes", type=int, nargs="+", default=[256, 512, 1024])  # 1, 4, 16 MP out
    parser.add_argument("--realesrgan-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    sample = write_samples(Path(tempfile.gettempdir()) / "coz-bench-samples", names=("astronaut",))[0]
    results = {
        "full_tiny_sd3": bench_backbone("tiny_sd3", args.sd3_sizes, 256, sample, args.device),
        "full_realesrgan": bench_backbone("realesrgan", args.realesrgan_sizes, 128, sample, args.device),
    }
    path = write_report("full", results, command="python -m coz.bench.full")
    print(path.read_text())
    print(f"written: {path} and {path.with_suffix('.json')}")
    return results


if __name__ == "__main__":
    main()
