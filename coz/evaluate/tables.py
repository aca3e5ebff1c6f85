"""The aggregate as files people read: a CSV with our and the paper's numbers side by side, and a
markdown table in the paper's layout (one block per dataset, rows by scale and method)."""

from __future__ import annotations

import csv
import io
import math

from coz.evaluate.aggregate import NAMES, OVERLAP, TIMES


def display_columns(records: list[dict], paper: list[dict]) -> list[str]:
    """The columns a table shows: image metrics if there are any, else the times, else overlap stats."""
    keys = [k for r in [*records, *paper] for k in r]
    present = list(dict.fromkeys(k for k in keys if k not in ("dataset", "method", "scale")))
    overlap = [k for k in present if k.startswith(OVERLAP)]
    if overlap:
        return overlap
    metrics = [k for k in present if k in NAMES and k not in TIMES]
    skip = {"zoom_mode", "backbone", "images", "failed", "failed_metrics", *TIMES}
    metrics += [k for k in present if k not in NAMES and k not in skip and not k.startswith(OVERLAP)]
    # Ours decide: a metric we did not measure has no column (the paper's alone would read as ours missing).
    measured = [k for k in metrics if any(_has(r.get(k)) for r in records or paper)]
    return measured or list(TIMES)


def _has(value) -> bool:
    return isinstance(value, float) and not math.isnan(value)


def merged(
    records: list[dict], paper: list[dict], order: list[str], not_implemented: list[str]
) -> list[dict]:
    """One row per (dataset, scale, method) with ``<col>`` (ours) and ``<col>_paper``."""
    ours = {(r["dataset"], r["scale"], r["method"]): r for r in records}
    theirs = {(r["dataset"], r["scale"], r["method"]): r for r in paper}
    columns = display_columns(records, paper)
    rows = []
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k[0], k[1], _rank(order, k[2]))):
        dataset, scale, method = key
        mine, pub = ours.get(key, {}), theirs.get(key, {})
        row = {"dataset": dataset, "scale": scale, "method": method}
        row["status"] = "not implemented in coz" if method in not_implemented else ("" if mine else "not run")
        row["images"] = mine.get("images", 0)
        row["failed"] = mine.get("failed", 0)
        row["failed_metrics"] = mine.get("failed_metrics", 0) if mine else 0
        for col in columns:
            row[col] = mine.get(col, math.nan)
            row[f"{col}_paper"] = pub.get(col, math.nan)
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def to_markdown(rows: list[dict], columns: list[str], title: str) -> str:
    """Per dataset: | Scale | Method | <metric> ours | paper | ... | images (failed) |; a dataset the
    paper has no numbers for (the user's own folder) has no paper columns."""
    out = [f"# {title}", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        out += [f"## {dataset}", ""]
        block = [r for r in rows if r["dataset"] == dataset]
        with_paper = any(_has(r.get(f"{col}_paper")) for r in block for col in columns)
        head = ["Scale", "Method"]
        for col in columns:
            name, lower = NAMES.get(col, (col, None))
            arrow = "" if lower is None else (" ↓" if lower else " ↑")
            head += [f"{name}{arrow}", "paper"] if with_paper else [f"{name}{arrow}"]
        head.append("images (failed)")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in block:
            cells = [f"{r['scale']}x", r["method"]]
            for col in columns:
                cells.append(_fmt(r[col], _digits(col)) if not r["status"] else "")
                if with_paper:
                    cells.append(_fmt(r[f"{col}_paper"], _digits(col)))
            count = count_cell(r)
            cells.append(count)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def findings(rows: list[dict], metric: str) -> list[str]:
    """Per dataset and scale: does CoZ beat direct SR on ``metric``, in our run and in the paper?"""
    lower = NAMES.get(metric, (metric, True))[1]
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for scale in sorted({r["scale"] for r in rows if r["dataset"] == dataset}):
            cell = [r for r in rows if r["dataset"] == dataset and r["scale"] == scale]
            direct = [r for r in cell if r["method"] in ("Direct SR", "S3Diff")]
            coz = [r for r in cell if "CoZ" in r["method"]]
            if not direct or not coz:
                continue
            d = direct[0]
            for c in coz:
                ours, paper = (
                    _verdict(c[metric], d[metric], lower),
                    _verdict(c[f"{metric}_paper"], d[f"{metric}_paper"], lower),
                )
                if ours is None and paper is None:
                    continue
                name = NAMES.get(metric, (metric,))[0]
                lines.append(
                    f"{dataset} {scale}x {name}: {c['method']} {_fmt(c[metric], 4)} vs {d['method']} "
                    f"{_fmt(d[metric], 4)}: {ours or 'not measured'} (paper: {paper or 'no number'})"
                )
    return lines


def count_cell(r: dict) -> str:
    """ "12 (1)": images (failed images); plus failed metric scores on good images, if any."""
    if r["status"]:
        return r["status"]
    text = f"{r['images']} ({r['failed']})"
    return text + (f", {r['failed_metrics']} failed scores" if r.get("failed_metrics") else "")


def _verdict(coz: float, direct: float, lower: bool) -> str | None:
    if math.isnan(coz) or math.isnan(direct):
        return None
    if coz == direct:
        return "tie"
    return "CoZ better" if (coz < direct) == lower else "direct SR better"


def _rank(order: list[str], method: str) -> int:
    return order.index(method) if method in order else len(order)


def _digits(col: str) -> int:
    return 2 if col in ("musiq", "psnr") else 4


def _fmt(value, digits: int) -> str:
    if not isinstance(value, float):
        return str(value)
    return "—" if math.isnan(value) else f"{value:.{digits}f}"
