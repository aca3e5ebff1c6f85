"""``python -m coz.bench`` (``make bench``): speed and memory of the zoom on this machine.

Writes ``experiments/bench/zoom.json`` and a readable ``experiments/bench/zoom.md``. Every number is
a median over several runs, taken after a warm-up, with the thread count and CPU recorded.

- overhead: a full ``coz.zoom`` run (realesrgan, 4 steps) split into phases; the chain's share is
  everything but model loading and the backbone forward.
- batching: the backbone on 4 crops at once versus one at a time.
- peak memory: the maximum resident set of a whole ``python -m coz.zoom`` process (256x, one image).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from coz.atomic import write_text_atomic
from coz.runinfo import machine, versions

OUT_DIR = Path("experiments/bench")


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), [round(t, 4) for t in times]


def bench_overhead(sample: Path, repeats: int) -> dict:
    """Median phase timings of whole zoom runs (one image, 4 steps, realesrgan)."""
    from hydra import compose, initialize_config_dir

    from coz.cli import CONFIG_DIR
    from coz.zoom import run

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="zoom", overrides=[f"input={sample}", "logger=none"])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # the first run converts/caches weights and warms up
            timings = run(cfg, run_dir=Path(tmp) / str(i))["timings"]
            if i:
                runs.append(timings)
    med = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
    work = med["total_s"] - med.get("load_s", 0.0)  # a run's work once the model is loaded
    return {
        "what": "python -m coz.zoom, 1 image, 4 steps (4x..256x), backbone=realesrgan, logger=none",
        "repeats": repeats,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs": runs,
        "sr_share": round(med.get("sr_s", 0.0) / work, 4),
        "chain_overhead_share": round((work - med.get("sr_s", 0.0)) / work, 4),
        "chain_overhead_without_writing_share": round(med["other_s"] / work, 4),
    }


def bench_batching(repeats: int, batch: int = 4) -> dict:
    """Per-image backbone time at batch 1 versus batch ``batch`` (128 -> 512 px crops)."""
    from coz.backbones.realesrgan import RealESRGAN

    backbone = RealESRGAN.from_config()
    crops = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    prompts = [""] * batch
    one_by_one, t1 = median_time(lambda: [backbone.upscale(crops[i : i + 1], prompts[:1]) for i in range(batch)], repeats)
    batched, tb = median_time(lambda: backbone.upscale(crops, prompts), repeats)
    return {
        "what": f"RealESRGAN.upscale on {batch} random 128x128 crops: one call per crop vs one batched call",
        "batch": batch,
        "per_image_s_batch1": round(one_by_one / batch, 4),
        "per_image_s_batched": round(batched / batch, 4),
        "speedup": round(one_by_one / batched, 3),
        "runs_batch1_s": t1,
        "runs_batched_s": tb,
    }


def bench_peak_memory(sample: Path) -> dict:
    """Max RSS of a whole ``python -m coz.zoom`` process: 256x zoom of one 512 image on the CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "coz.zoom", f"input={sample}", "logger=none", f"hydra.run.dir={tmp}/run"]
        subprocess.run(cmd, check=True, capture_output=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return {"what": "max RSS of `python -m coz.zoom` (realesrgan, 4 steps, 1 image, CPU)",
            "peak_rss_mib": round(peak_kib / 1024, 1)}


def write_report(results: dict, name: str) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_text_atomic(OUT_DIR / f"{name}.json", json.dumps(results, indent=2))
    lines = [f"# Benchmark: {name}", "", f"Machine: {results['machine']['cpu']}, "
             f"{results['machine']['torch_threads']} torch threads, torch {results['versions'].get('torch')}.",
             f"Measured {results['date']} with `make bench` (medians after a warm-up).", ""]
    for section, data in results["results"].items():
        lines += [f"## {section}", "", data.get("what", ""), ""]
        lines += [f"- `{k}`: {v}" for k, v in data.items() if k != "what" and not k.startswith("runs")]
        lines.append("")
    path = OUT_DIR / f"{name}.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["overhead", "batching", "memory"], action="append")
    args = parser.parse_args(argv)

    from coz.samples import write_samples

    sample = write_samples(Path(tempfile.gettempdir()) / "coz-bench-samples", names=("astronaut",))[0]
    chosen = args.only or ["overhead", "batching", "memory"]
    results = {}
    if "overhead" in chosen:
        results["overhead"] = bench_overhead(sample, args.repeats)
    if "batching" in chosen:
        results["batching"] = bench_batching(args.repeats)
    if "memory" in chosen:
        results["memory"] = bench_peak_memory(sample)
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "versions": versions(),
              "results": results}
    path = write_report(record, "zoom")
    print(path.read_text())
    print(f"written: {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
