"""``python -m coz.bench --only grpo_3b``: time and peak memory per GRPO step of a policy with
Qwen2.5-VL-3B-Instruct's shapes (random weights, ``prompt=tiny_vlm prompt.shape=3b``), for G = 2, 4, 8.

Each G is one ``python -m coz.train_grpo experiment=smoke`` process with the real-size policy and the
rule critic (``critic=keyword``: the critic's own cost is not the policy's), so the numbers are those
of the training loop itself: the seconds of generation and update that ``train.csv`` logs per step
(median over the steps after the first, which pays for warm-up) and the peak memory.

- On a GPU (the benchmark the issue asks for): bfloat16, the real views (a 512 view is 324 image
  tokens), 2 pairs per step and completions of up to 128 tokens, as the paper's run; random weights
  never stop early, so every completion is the full 128 tokens (the worst case). Peak memory is
  ``torch.cuda.max_memory_allocated`` per step.
- On the CPU (a real-size check of the code path, not a speed claim): bfloat16, one pair, small
  views (16 image tokens) and 16 new tokens, G = 2 only; peak memory is the process's VmHWM.

Writes ``experiments/bench/grpo_3b.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL_VIEW_PIXELS = 12845056  # Qwen2.5-VL's own max_pixels: a 512 view becomes 324 image tokens
SETTINGS = {
    "cuda": dict(
        generations=[2, 4, 8], batch_size=2, max_new_tokens=128, max_pixels=REAL_VIEW_PIXELS, steps=4
    ),
    "cpu": dict(generations=[2], batch_size=1, max_new_tokens=16, max_pixels=112 * 112, steps=2),
}


def step_loop_overrides(generations: int, device: str, s: dict, folder: Path) -> list[str]:
    """The ``coz.train_grpo`` command line of one measurement."""
    return [
        "experiment=smoke",
        "prompt.shape=3b",
        "prompt.dtype=bfloat16",
        f"prompt.max_pixels={s['max_pixels']}",
        "critic=keyword",
        "critic.words=[detailed]",
        "logger=csv",
        f"grpo.generations={generations}",
        f"grpo.batch_size={s['batch_size']}",
        f"grpo.max_new_tokens={s['max_new_tokens']}",
        f"grpo.steps={s['steps']}",
        "val.at_start=false",
        "val.every_n_steps=0",
        "val.limit=1",
        f"checkpoint.every_n_steps={s['steps']}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"hydra.run.dir={folder}",
    ]


def run_step_loop(generations: int, device: str, s: dict, folder: Path) -> dict:
    overrides = step_loop_overrides(generations, device, s, folder)
    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr)); "
        f"sys.argv = ['coz.train_grpo', *{overrides!r}]; "
        "runpy.run_module('coz.train_grpo', run_name='__main__')"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"G={generations}: train_grpo failed:\n{out.stderr[-3000:]}")
    wall = time.perf_counter() - start
    with (folder / "train.csv").open(newline="") as f:
        steps = list(csv.DictReader(f))
    timed = steps[1:] or steps
    result = {
        "generations": generations,
        "sequences_per_step": generations * s["batch_size"],
        **{k: round(statistics.median(float(r[k]) for r in timed), 3) for k in ("generate_s", "update_s")},
        "completion_tokens": round(statistics.median(float(r["completion_tokens"]) for r in timed), 1),
        "peak_rss_mib": round(int(out.stderr.split("VmHWM")[-1].split()[0]) / 1024, 1),
        "wall_s": round(wall, 1),
    }
    if "peak_gpu_mib" in steps[0]:
        result["peak_gpu_mib"] = round(max(float(r["peak_gpu_mib"]) for r in steps), 1)
    return result


def bench_grpo_3b(device: str | None = None, generations: list[int] | None = None) -> dict:
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = dict(SETTINGS[device])
    if generations:
        s["generations"] = generations
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_step_loop(g, device, s, Path(tmp) / f"g{g}") for g in s["generations"]]
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    return {
        f"grpo_3b_{device}_G{run['generations']}": {
            "what": (
                f"Qwen2.5-VL-3B-shaped policy (random, bfloat16) + LoRA r 8 on {where}, G = {run['generations']}: "
                f"{s['batch_size']} pair(s) x G per step, views of at most {s['max_pixels']} pixels, "
                f"{s['max_new_tokens']} new tokens, rule critic; medians over steps 2..{s['steps']}"
            ),
            **run,
        }
        for run in runs
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--generations", type=int, nargs="+", default=None)
    args = parser.parse_args(argv)
    from coz.bench.report import write_report

    results = bench_grpo_3b(args.device, args.generations)
    path = write_report("grpo_3b", results, command="python -m coz.bench --only grpo_3b")
    print(path.read_text())
    return results


if __name__ == "__main__":
    main()
