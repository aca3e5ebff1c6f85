"""Per-image rows -> the paper's tables: the mean of every metric per dataset, method and scale
(Table 6: mean, median and minimum), next to the published numbers (``coz/evaluate/paper/<table>.csv``,
package data: an installed wheel has them too)."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from importlib.resources import files

from coz.evaluate.rows import BASE_FIELDS

TIMES = ("sr_s", "pe_s")
OVERLAP = ("overlap_cos", "nonoverlap_cos")
# Display names and direction (True: lower is better) of the columns people know by another name.
NAMES = {
    "niqe": ("NIQE", True),
    "musiq": ("MUSIQ", False),
    "maniqa_pipal": ("MANIQA", False),
    "clipiqa": ("CLIPIQA", False),
    "piqe": ("PIQE", True),
    "psnr": ("PSNR", False),
    "ssim": ("SSIM", False),
    "lpips": ("LPIPS", True),
    "sr_s": ("SR s", True),
    "pe_s": ("PE s", True),
}


def value_columns(rows: list[dict]) -> list[str]:
    """Metric columns present in the rows, in a stable order (then times, overlap statistics)."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in BASE_FIELDS and key not in seen and key not in OVERLAP:
                seen.append(key)
    has_overlap = any(k in row for row in rows for k in OVERLAP)
    return seen + (list(OVERLAP) if has_overlap else []) + list(TIMES)


def aggregate(rows: list[dict]) -> list[dict]:
    """One record per (dataset, method, scale): image and failure counts, the mean of each metric
    (failed images count with their worst values, as in the paper; a full-reference metric without
    ground truth at a scale is left out), and mean/median/min of the overlap similarities."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["method"], row["scale"])].append(row)
    columns = value_columns(rows)
    out = []
    for (dataset, method, scale), members in groups.items():
        record = {
            "dataset": dataset,
            "method": method,
            "scale": scale,
            "zoom_mode": members[0].get("zoom_mode", ""),
            "backbone": members[0].get("backbone", ""),
            "images": len(members),
            "failed": sum(1 for r in members if r["failed"]),
            # scores that failed on images that were otherwise fine (failed images fail them all)
            "failed_metrics": sum(int(r.get("failed_metrics") or 0) for r in members if not r["failed"]),
        }
        for col in columns:
            values = [r[col] for r in members if isinstance(r.get(col), float) and not math.isnan(r[col])]
            if col in OVERLAP:
                for stat, fn in (("mean", statistics.fmean), ("median", statistics.median), ("min", min)):
                    record[f"{col}_{stat}"] = fn(values) if values else math.nan
            else:
                record[col] = statistics.fmean(values) if values else math.nan
        out.append(record)
    return out


def paper_numbers(table: str) -> list[dict]:
    """The published numbers of ``table`` (``coz/evaluate/paper/<table>.csv``); [] if none."""
    path = files("coz.evaluate") / "paper" / f"{table}.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {
                k: (int(v) if k == "scale" else v if k in ("dataset", "method") else _num(v))
                for k, v in r.items()
            }
            for r in csv.DictReader(f)
        ]


def method_order(ours: list[dict], paper: list[dict]) -> list[str]:
    """The paper's row order first, then methods only we have, in the order they appear."""
    order: list[str] = []
    for record in [*paper, *ours]:
        if record["method"] not in order:
            order.append(record["method"])
    return order


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan
