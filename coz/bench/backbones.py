"""SPAN against Real-ESRGAN on this machine, in one run: one forward and a whole 256x CoZ chain.

Each backbone runs three ways: coz's default path (``backbone=span`` / ``backbone=realesrgan``: on
the CPU the ncnn runtime fed with the converted weights), the ncnn runtime's own inference of the
files its pip package ships (default options, Vulkan off), and eager PyTorch. On a GPU: coz's path
only (PyTorch, float16). Methods alternate A B C ... A B C so drifts in machine load hit them alike;
every number is a median after a warm-up.

- forward: one 128 -> 512 px forward (a zoom step's crop), same random input for all.
- chain: ``ZoomChain`` (recursive_multiscale, 4 steps to 256x, null prompts) on the astronaut
  photo's x0; SR seconds (the chain's ``sr`` phase) and the whole chain's seconds.

Run by ``make bench``; alone: ``python -m coz.bench.backbones [--rounds 7]``. Writes
``experiments/bench/backbones.json`` and ``.md`` (``backbones_gpu`` on a GPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from coz.backbones.base import Backbone

SIZE = 128  # a zoom step's low-res crop: 128 -> 512 px


class NcnnOwn(Backbone):
    """The ncnn runtime on a pip package's own files, default options: the reference runtime."""

    def __init__(self, param: Path, bin_: Path, name: str) -> None:
        import ncnn

        self._ncnn, self.name = ncnn, name
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = torch.get_num_threads()
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(bin_)) != 0:
            raise RuntimeError(f"ncnn could not load {param}")

    def upscale(self, images: torch.Tensor, prompts=None, **kwargs) -> torch.Tensor:
        outs = []
        for image in images.float():
            pixels = np.ascontiguousarray(image.numpy())  # (3, h, w); ncnn.Mat borrows it
            extractor = self.net.create_extractor()
            extractor.input("data", self._ncnn.Mat(pixels))
            _, out = extractor.extract("output")
            outs.append(torch.from_numpy(np.array(out)).clamp_(0, 1))
        return torch.stack(outs)


def make_backbones(device: torch.device) -> dict[str, Backbone]:
    """name -> backbone; on a GPU only coz's paths (PyTorch, float16)."""
    from coz.backbones import ncnn_weights, span_weights
    from coz.backbones.cnn.realesrgan import RealESRGAN
    from coz.backbones.cnn.span import Span

    if device.type != "cpu":
        return {
            "span (coz, torch fp16)": Span.from_config(device=device),
            "realesrgan (coz, torch fp16)": RealESRGAN.from_config(device=device),
        }
    return {
        "span (coz: ncnn, our weights)": Span.from_config(),
        "span (ncnn's own)": NcnnOwn(*span_weights.find_model_files("ClearReality4x"), "span-ncnn-own"),
        "span (torch)": Span.from_config(runtime="torch"),
        "realesrgan (coz: ncnn, our weights)": RealESRGAN.from_config(),
        "realesrgan (ncnn's own)": NcnnOwn(*ncnn_weights.find_model_files(), "realesrgan-ncnn-own"),
        "realesrgan (torch)": RealESRGAN.from_config(runtime="torch"),
    }


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each function per round, functions alternating within a round, after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def bench(rounds: int, chain_rounds: int, device: torch.device) -> dict:
    from PIL import Image

    from coz.chain import ZoomChain
    from coz.images import prepare_x0
    from coz.prompts import NullPrompt
    from coz.run.timing import PhaseTimer
    from coz.samples import write_samples

    backbones = make_backbones(device)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(device)

    def forward(backbone):
        def run():
            backbone.upscale(x, [""])
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    load_before = os.getloadavg()
    fwd = alternate({name: forward(b) for name, b in backbones.items()}, rounds)

    import tempfile

    photo = write_samples(Path(tempfile.gettempdir()) / "coz-bench-samples", names=("astronaut",))[0]
    x0, _ = prepare_x0(Image.open(photo).convert("RGB"))
    sr_seconds: dict[str, list[float]] = {name: [] for name in backbones}

    def chain(name, backbone):
        def run():
            timer = PhaseTimer()
            ZoomChain("recursive_multiscale", backbone, NullPrompt(), steps=4, timer=timer).run([x0])
            sr_seconds[name].append(timer.seconds["sr"])

        return run

    whole = alternate({name: chain(name, b) for name, b in backbones.items()}, chain_rounds)
    sr = {name: s[1:] for name, s in sr_seconds.items()}  # drop the warm-up's
    med = {k: statistics.median(v) for k, v in fwd.items()}
    med_sr = {k: statistics.median(v) for k, v in sr.items()}
    span_coz, resr_coz = (
        next(k for k in med if k.startswith(p) and "coz" in k) for p in ("span", "realesrgan")
    )
    return {
        "what": (
            f"forward: one {SIZE}->{SIZE * 4} px forward, same random input, {rounds} alternating rounds; "
            f"chain: ZoomChain recursive_multiscale, 4 steps (256x), null prompts, astronaut x0, "
            f"{chain_rounds} alternating rounds; medians after one warm-up"
        ),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "load_average_before_after": [round(v, 2) for v in (*load_before, *os.getloadavg())],
        "forward_median_s": {k: round(v, 4) for k, v in med.items()},
        "chain_256x_sr_median_s": {k: round(v, 4) for k, v in med_sr.items()},
        "chain_256x_total_median_s": {k: round(statistics.median(v), 4) for k, v in whole.items()},
        "realesrgan_over_span": {
            "forward": round(med[resr_coz] / med[span_coz], 2),
            "chain_256x_sr": round(med_sr[resr_coz] / med_sr[span_coz], 2),
        },
        "runs_s": {
            "forward": {k: [round(t, 4) for t in v] for k, v in fwd.items()},
            "chain_256x_sr": {k: [round(t, 4) for t in v] for k, v in sr.items()},
        },
    }


def main(argv: list[str] | None = None) -> dict:
    from coz.bench.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chain-rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {"backbones": bench(args.rounds, args.chain_rounds, device)}
    path = write_report("backbones" if device.type == "cpu" else "backbones_gpu", results)
    print(path.read_text())
    return results


if __name__ == "__main__":
    main()
