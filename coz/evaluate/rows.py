"""Per-image result rows, appended to CSV as they are computed, so an interrupted evaluation loses
nothing and a rerun into the same folder skips what is done.

Each process of a job appends to its own file, ``<job>/rows/<shard>-<rank>.csv``; readers take
the union of every ``rows/*.csv`` under a folder (a job, or a whole sweep), the last row of a key
within a job winning (a retried image). A line cut short by a crash is dropped when the file is
next opened for appending.

``failed``: 0 scored; 1 the input cannot be read (permanent); 2 the zoom failed (retried on a rerun).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

KEY = ("dataset", "method", "image", "scale")
# Columns every row has; metric columns follow.
BASE_FIELDS = (
    *KEY,
    "zoom_mode",
    "backbone",
    "prompt_mode",
    "failed",
    "failed_metrics",
    "error",
    "sr_s",
    "pe_s",
    "metrics_s",
    "prompt",
)


class RowWriter:
    """Appends rows with a fixed header to one CSV file; each row is flushed to disk at once."""

    def __init__(self, path: Path, fields: Iterable[str]) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            _drop_partial_last_line(self.path)
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header != self.fields:
                raise ValueError(
                    f"{self.path}: written with other columns ({header}); use another run folder"
                )
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def append(self, rows: Iterable[dict]) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="raise")
            for row in rows:
                writer.writerow({k: _format(row.get(k, "")) for k in self.fields})
            f.flush()
            os.fsync(f.fileno())


def read_rows(root: Path) -> list[dict]:
    """Every complete row under ``root`` (recursively), values parsed, each with ``job`` (its job
    folder relative to ``root``); within a job the last row of a key wins."""
    root = Path(root)
    files = sorted(root.rglob("rows/*.csv"), key=lambda p: p.stat().st_mtime)
    latest: dict[tuple, dict] = {}
    for path in files:
        job = str(path.parent.parent.relative_to(root))
        with path.open(newline="") as f:
            text = f.read()
        if not text.endswith("\n"):  # a line cut short by a crash
            text = text[: text.rfind("\n") + 1]
        for raw in csv.DictReader(io.StringIO(text)):
            if None in raw or any(v is None for v in raw.values()):
                continue
            row = {k: _parse(k, v) for k, v in raw.items()}
            row["job"] = job
            latest[(job, *(row[k] for k in KEY))] = row
    return list(latest.values())


def finished_images(rows: Iterable[dict], dataset: str, method: str, scales: Iterable[int]) -> set[str]:
    """Images that have a row for every scale of this dataset and method (an image whose zoom
    failed, ``failed == 2``, is not finished: a rerun tries it again)."""
    need = set(scales)
    seen: dict[str, set[int]] = {}
    for row in rows:
        if row["dataset"] == dataset and row["method"] == method and row["failed"] != 2:
            seen.setdefault(row["image"], set()).add(row["scale"])
    return {image for image, scales in seen.items() if need <= scales}


def _drop_partial_last_line(path: Path) -> None:
    """A crash can leave half a row; cut the file back to its last newline before appending."""
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _format(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _parse(key: str, value: str):
    if key in (
        "dataset",
        "method",
        "image",
        "zoom_mode",
        "backbone",
        "prompt_mode",
        "error",
        "prompt",
        "job",
    ):
        return value
    if key in ("scale", "failed", "failed_metrics"):
        return int(value) if value else 0
    try:
        return float(value) if value != "" else math.nan
    except ValueError:
        return value
