"""``python -m coz.bench --only evaluate``: throughput of ``experiment=offline`` on this CPU.

One job of the offline preset (CoZ: Real-ESRGAN, 4 steps, NIQE + PIQE + PSNR/SSIM) over the sample
photos, with 1 and with 2 processes (``trainer.devices``), alternating, several times; reports the
median images per second, and the share of a job's time spent zooming vs scoring metrics (from the
per-row ``sr_s`` / ``metrics_s`` the evaluation records)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


def bench_evaluate(photos: Path, repeats: int = 3, processes: tuple[int, ...] = (1, 2)) -> dict:
    from hydra import compose, initialize_config_dir

    from coz.evaluate.rows import read_rows
    from coz.evaluate.tool import run
    from coz.run.cli import quote_null_choices, tool_config_dir

    images = len(list(photos.glob("*.png")))
    walls: dict[int, list[float]] = {n: [] for n in processes}
    shares: dict[int, list[dict]] = {n: [] for n in processes}
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=tool_config_dir("evaluate"), version_base="1.3"),
    ):
        for i in range(repeats + 1):  # round 0 warms up (weight conversion, imports)
            for n in processes:
                overrides = ["experiment=offline", "method=coz", f"input={photos}", "trainer.accelerator=cpu"]
                overrides += [
                    f"trainer.devices={n}",
                    "report.html=false",
                    "report.plots=false",
                    "report.strips=0",
                ]
                cfg = compose(config_name="evaluate", overrides=quote_null_choices(overrides))
                folder = Path(tmp) / f"{i}-{n}"
                start = time.perf_counter()
                run(cfg, run_dir=folder, results_root=folder)
                wall = time.perf_counter() - start
                if i:
                    rows = read_rows(folder)
                    walls[n].append(wall)
                    # seconds of work per process: summed over images, divided among the processes
                    sr = sum(r["sr_s"] for r in rows if r["scale"] == max(x["scale"] for x in rows))
                    metrics = sum(r["metrics_s"] for r in rows)
                    shares[n].append({"zoom": sr / n / wall, "metrics": metrics / n / wall})
    return {
        "what": f"python -m coz.evaluate experiment=offline method=coz on {images} sample photos "
        "(Real-ESRGAN via ncnn, 4 steps to 256x; NIQE, PIQE, PSNR/SSIM where ground truth exists), "
        "trainer.devices=1 vs 2 (CPU processes), alternating; wall time of run() including model loading",
        "repeats": repeats,
        "images": images,
        "processes": {
            str(n): {
                "median_wall_s": round(statistics.median(walls[n]), 2),
                "images_per_s": round(images / statistics.median(walls[n]), 4),
                "zoom_share": round(statistics.median(s["zoom"] for s in shares[n]), 3),
                "metrics_share": round(statistics.median(s["metrics"] for s in shares[n]), 3),
                "walls_s": [round(w, 2) for w in walls[n]],
            }
            for n in processes
        },
    }
