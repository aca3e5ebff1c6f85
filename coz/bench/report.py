"""What every benchmark shares: median timings and the report files in ``experiments/bench/``."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from coz.run.atomic import write_text_atomic
from coz.run.runinfo import machine, versions

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


def write_report(name: str, sections: dict[str, dict], command: str = "make bench") -> Path:
    """Write ``<name>.json`` and ``<name>.md`` with the machine and versions; sections measured
    earlier and not rerun (``--only``) are kept, each with the date it was measured."""
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": versions(),
        "command": command,
        "results": sections,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for data in results["results"].values():
        data.setdefault("measured", results["date"])
    previous = OUT_DIR / f"{name}.json"
    if previous.exists():
        earlier = json.loads(previous.read_text())
        for data in earlier.get("results", {}).values():
            data.setdefault("measured", earlier.get("date"))
        results["results"] = {**earlier.get("results", {}), **results["results"]}
    write_text_atomic(OUT_DIR / f"{name}.json", json.dumps(results, indent=2))
    lines = [
        f"# Benchmark: {name}",
        "",
        f"Machine: {results['machine']['cpu']}, "
        f"{results['machine']['torch_threads']} torch threads, torch {results['versions'].get('torch')}.",
        f"Written {results['date']} by `{command}`; each section says when it was measured "
        "(medians after a warm-up).",
        "",
    ]
    for section, data in results["results"].items():
        lines += [f"## {section}", "", data.get("what", ""), ""]
        lines += [f"- `{k}`: {v}" for k, v in data.items() if k != "what" and not k.startswith("runs")]
        lines.append("")
    path = OUT_DIR / f"{name}.md"
    write_text_atomic(path, "\n".join(lines))
    return path
