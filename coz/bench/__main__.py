"""``python -m coz.bench`` (``make bench``): speed and memory of the zoom on this machine.

Writes ``experiments/bench/zoom.json`` and a readable ``experiments/bench/zoom.md``. Every number is
a median over several runs, taken after a warm-up, with the thread count and CPU recorded.

- backbones (coz.bench.backbones): span vs realesrgan, per forward and per 256x chain.
- forward (coz.bench.forward), prompts (coz.bench.prompts) and full (coz.bench.full: peak memory
  of full-image SR at two image sizes): see those modules.
- overhead: a full ``coz.zoom`` run (realesrgan, 4 steps) split into phases; the chain's share is
  everything but model loading and the backbone forward.
- batching: the backbone on 4 crops at once versus one at a time.
- peak memory: the maximum resident set of a whole ``python -m coz.zoom`` process (256x, one image).
- train (coz.bench.train): steps/s and peak memory of the tiny coz.train_sr recipes, and seconds per
  coz.train_grpo step (generation, scoring, update)
  (``experiments/bench/train.md``).
- evaluate (coz.bench.evaluate): images per second of ``coz.evaluate experiment=offline``, 1 vs 2
  processes, and the share of zoom vs metrics (``experiments/bench/evaluate.md``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from coz.bench.report import median_time, write_report


def bench_overhead(sample: Path, repeats: int, runtime: str = "auto", batch_size: int = 4) -> dict:
    """Median phase timings of whole zoom runs (``sample``: an image or a folder; 4 steps,
    realesrgan on ``runtime``)."""
    from hydra import compose, initialize_config_dir

    from coz.run.cli import tool_config_dir
    from coz.zoom.tool import run

    with initialize_config_dir(config_dir=tool_config_dir("zoom"), version_base="1.3"):
        cfg = compose(
            config_name="zoom",
            overrides=[
                f"input={sample}",
                "logger=none",
                f"backbone.runtime={runtime}",
                f"batch_size={batch_size}",
            ],
        )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # the first run converts/caches weights and warms up
            timings = run(cfg, run_dir=Path(tmp) / str(i))["timings"]
            if i:
                runs.append(timings)
    med = {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}
    work = med["total_s"] - med.get("load_s", 0.0)  # a run's work once the model is loaded
    return {
        "what": f"python -m coz.zoom input={sample.name}, 4 steps (4x..256x), backbone=realesrgan "
        f"backbone.runtime={runtime}, batch_size={batch_size}, logger=none",
        "repeats": repeats,
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs": runs,
        "sr_share": round(med.get("sr_s", 0.0) / work, 4),
        "chain_overhead_share": round((work - med.get("sr_s", 0.0)) / work, 4),
        "chain_overhead_without_writing_share": round(med["other_s"] / work, 4),
    }


def bench_batching(repeats: int, batch: int = 4, runtime: str = "auto") -> dict:
    """Per-image backbone time at batch 1 versus batch ``batch`` (128 -> 512 px crops)."""
    from coz.backbones.cnn.realesrgan import RealESRGAN

    backbone = RealESRGAN.from_config(runtime=runtime)
    crops = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    prompts = [""] * batch
    one_by_one, t1 = median_time(
        lambda: [backbone.upscale(crops[i : i + 1], prompts[:1]) for i in range(batch)], repeats
    )
    batched, tb = median_time(lambda: backbone.upscale(crops, prompts), repeats)
    return {
        "what": f"RealESRGAN.upscale ({backbone.runtime}) on {batch} random 128x128 crops: "
        "one call per crop vs one batched call",
        "batch": batch,
        "per_image_s_batch1": round(one_by_one / batch, 4),
        "per_image_s_batched": round(batched / batch, 4),
        "speedup": round(one_by_one / batched, 3),
        "runs_batch1_s": t1,
        "runs_batched_s": tb,
    }


def bench_peak_memory(sample: Path) -> dict:
    """Peak resident memory of a whole ``python -m coz.zoom`` process: 256x zoom of one 512 image.

    Read from the child's own VmHWM at exit: getrusage's ru_maxrss would also count this (large)
    benchmark process, whose high-water mark a forked child inherits.
    """
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import atexit, runpy, sys; "
            "atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') "
            "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr)); "
            f"sys.argv = ['coz.zoom', 'input={sample}', 'logger=none', 'hydra.run.dir={tmp}/run']; "
            "runpy.run_module('coz.zoom', run_name='__main__')"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak_kib = int(out.stderr.split("VmHWM")[-1].split()[0])
    return {
        "what": "peak RSS (VmHWM) of `python -m coz.zoom` (realesrgan, 4 steps, 1 image, CPU)",
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


# what `make bench` runs (grpo_3b too where CUDA is present: the real-size GRPO step needs a GPU)
SECTIONS = ("forward", "backbones", "prompts", "full", "overhead", "batching", "memory", "evaluate", "train")


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=[*SECTIONS, "grpo_3b"], action="append")
    args = parser.parse_args(argv)

    from coz.samples import write_samples

    sample = write_samples(Path(tempfile.gettempdir()) / "coz-bench-samples", names=("astronaut",))[0]
    chosen = args.only or list(SECTIONS)
    if not args.only and torch_cuda_available():  # the real-size GRPO step needs a GPU to be quick
        chosen.append("grpo_3b")
    if "forward" in chosen:  # issue 8: coz vs the ncnn runtime vs eager PyTorch, one forward
        from coz.bench import forward

        forward.main([])
    if "backbones" in chosen:  # issue 16: span vs realesrgan, coz vs ncnn's own runtime, forward + 256x chain
        from coz.bench import backbones

        backbones.main([])
    if "prompts" in chosen:  # batched vs one-by-one prompt extraction (tiny VLM)
        from coz.bench import prompts

        prompts.main([])
    if "full" in chosen:  # full-image SR: peak memory at two image sizes (experiments/bench/full.md)
        from coz.bench import full

        full.main([])
    results = {}
    if "overhead" in chosen:
        results["overhead"] = bench_overhead(sample, args.repeats)
        # the same zoom before the ncnn CPU path existed (PyTorch eager, channels-last)
        results["overhead_torch_runtime"] = bench_overhead(sample, args.repeats, runtime="torch")
        # a folder, one image per batch: writing one image's outputs overlaps the next one's SR
        folder = write_samples(Path(tempfile.gettempdir()) / "coz-bench-folder")[0].parent
        results["overhead_folder"] = bench_overhead(folder, args.repeats, batch_size=1)
    if "batching" in chosen:
        results["batching"] = bench_batching(args.repeats)
        results["batching_torch_runtime"] = bench_batching(args.repeats, runtime="torch")
    if "memory" in chosen:
        results["memory"] = bench_peak_memory(sample)
    if results:
        path = write_report("zoom", results)
        print(path.read_text())
        print(f"written: {path} and {path.with_suffix('.json')}")
    if "train" in chosen:  # the tiny training recipes: steps/s and peak memory
        from coz.bench.train import bench_grpo, bench_train

        path = write_report("train", {**bench_train(args.repeats), **bench_grpo(args.repeats)})
        print(path.read_text())
    if "grpo_3b" in chosen:  # a Qwen2.5-VL-3B-sized policy: time and memory per GRPO step, G = 2, 4, 8
        from coz.bench import grpo

        grpo.main([])
    if "evaluate" in chosen:  # images/s of experiment=offline, 1 vs 2 processes
        from coz.bench.evaluate import bench_evaluate

        photos = write_samples(Path(tempfile.gettempdir()) / "coz-bench-eval", names=("astronaut", "chelsea"))
        path = write_report("evaluate", {"offline": bench_evaluate(photos[0].parent, args.repeats)})
        print(path.read_text())


if __name__ == "__main__":
    main()
