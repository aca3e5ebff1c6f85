"""``python -m coz.bench --only train``: steps per second and peak memory of the tiny training
recipes on this CPU (issue 5's benchmark; the GPU half needs a lent GPU).

Each recipe runs as its own ``python -m coz.train_sr experiment=<recipe>`` process, ``repeats`` times;
steps/s is the median of the per-step throughput the run logs itself (``logs/metrics.csv``, after the
first step, which pays for warm-up), peak memory the process's VmHWM at exit."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = {
    "smoke": "tiny OSEDiff-SD3 (64-px crops, batch 2): generator + fake-score LoRA, DMD + L2, 2 stages",
    "cnn": "Real-ESRGAN fine-tuning (the embedded weights, PyTorch on the CPU)",
}


def run_recipe(recipe: str, folder: Path) -> dict:
    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr)); "
        f"sys.argv = ['coz.train_sr', 'experiment={recipe}', 'logger=csv', 'hydra.run.dir={folder}']; "
        "runpy.run_module('coz.train_sr', run_name='__main__')"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with (folder / "logs" / "metrics.csv").open(newline="") as f:
        rates = [
            float(r["throughput/steps_per_s"]) for r in csv.DictReader(f) if r.get("throughput/steps_per_s")
        ]
    return {
        "wall_s": round(wall, 2),
        "steps_per_s": statistics.median(rates[1:] or rates),
        "peak_rss_mib": round(int(out.stderr.split("VmHWM")[-1].split()[0]) / 1024, 1),
    }


def bench_train(repeats: int = 3) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, what in RECIPES.items():
            runs = [run_recipe(recipe, Path(tmp) / f"{recipe}-{i}") for i in range(repeats)]
            out[f"train_{recipe}"] = {
                "what": f"python -m coz.train_sr experiment={recipe} logger=csv: {what}; whole process",
                "repeats": repeats,
                "median_steps_per_s": round(statistics.median(r["steps_per_s"] for r in runs), 3),
                "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                "runs": runs,
            }
    return out


def bench_grpo(repeats: int = 3) -> dict:
    """Generation, scoring and update seconds per GRPO step of ``experiment=smoke`` (tiny policy and
    critic, G=2), medians over the steps (after the first) of ``repeats`` whole runs, from train.csv."""
    per_run = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            folder = Path(tmp) / f"grpo-{i}"
            code = (
                "import atexit, runpy, sys; "
                "atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') "
                "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr)); "
                f"sys.argv = ['coz.train_grpo', 'experiment=smoke', 'logger=csv', 'hydra.run.dir={folder}']; "
                "runpy.run_module('coz.train_grpo', run_name='__main__')"
            )
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            with (folder / "train.csv").open(newline="") as f:
                steps = list(csv.DictReader(f))[1:]
            per_run.append(
                {
                    **{
                        k: statistics.median(float(s[k]) for s in steps)
                        for k in ("generate_s", "score_s", "update_s")
                    },
                    "peak_rss_mib": round(int(out.stderr.split("VmHWM")[-1].split()[0]) / 1024, 1),
                }
            )
    return {
        "grpo_smoke": {
            "what": "python -m coz.train_grpo experiment=smoke logger=csv (tiny Qwen2.5-VL policy + LoRA, "
            "tiny critic, G=2): seconds per step from train.csv, median over steps after the first",
            "repeats": repeats,
            **{
                f"median_{k}": round(statistics.median(r[k] for r in per_run), 3)
                for k in ("generate_s", "score_s", "update_s", "peak_rss_mib")
            },
            "runs": per_run,
        }
    }
