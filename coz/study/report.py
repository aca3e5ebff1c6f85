"""``coz.study report``: the analysis of a study's votes, written to ``<study>/report/``.

mos.csv       kind, method, MOS, std, votes, raters
ttests.csv    kind, method a, method b, the test, n, t, p, stars
excluded.csv  each rater left out and the rule that did it (empty but for its header: none)
mos.png       Figure 10: one panel per kind, a bar per method (MOS, std error bars, the value on
              the bar) and a bracket with stars over each significant pair
report.html   all of it in one self-contained page
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
from html import escape
from pathlib import Path
from typing import Any

from coz.run.atomic import write_atomic, write_text_atomic
from coz.study.analysis import analyse

log = logging.getLogger("coz.study")

PANEL_TITLES = {"image": "Image generation", "text": "Text generation"}


def write_report(
    manifest: dict, votes: list[dict], out: Path, min_votes: int = 0, constant: bool = False
) -> dict:
    kinds = list(manifest.get("kinds") or sorted({q["kind"] for q in manifest["questions"].values()}))
    result = analyse(votes, manifest["methods"], kinds, min_votes, constant)
    result["kinds"] = kinds
    result["methods"] = manifest["methods"]
    result["manifest_sha256"] = manifest["sha256"]
    _csv(out / "mos.csv", result["mos"], ["kind", "method", "mos", "std", "votes", "raters"])
    _csv(out / "ttests.csv", result["ttests"], ["kind", "a", "b", "test", "n", "t", "p", "stars"])
    excluded = [{"rater": r, "reason": why} for r, why in result["excluded"].items()]
    _csv(out / "excluded.csv", excluded, ["rater", "reason"])
    png = figure(result, out / "mos.png") if result["mos"] else None
    write_text_atomic(out / "report.html", html(result, png))
    write_text_atomic(
        out / "report.json",
        json.dumps(
            {k: v for k, v in result.items() if k != "excluded"} | {"excluded": excluded},
            indent=1,
            default=str,
        ),
    )
    return result


def _csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def figure(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in result["kinds"] if any(r["kind"] == k for r in result["mos"])]
    methods = result["methods"]
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 4.4), squeeze=False)
    for index, (ax, kind) in enumerate(zip(axes[0], kinds, strict=True)):
        rows = [r for r in result["mos"] if r["kind"] == kind]
        xs = list(range(len(rows)))
        means = [r["mos"] for r in rows]
        errors = [0.0 if math.isnan(r["std"]) else r["std"] for r in rows]
        ax.bar(
            xs,
            means,
            yerr=errors,
            capsize=5,
            color=[colors[r["method"]] for r in rows],
            edgecolor="black",
            width=0.65,
        )
        for x, mean in zip(xs, means, strict=True):
            ax.text(
                x,
                0.12,
                f"{mean:.2f}",
                ha="center",
                va="bottom",
                fontsize=11,
                color="white",
                fontweight="bold",
            )
        top = max(m + e for m, e in zip(means, errors, strict=True))
        position = {r["method"]: x for x, r in zip(xs, rows, strict=True)}
        level = max(top, 5.0) + 0.15
        for test in result["ttests"]:  # a bracket per significant pair, stacked upwards
            if test["kind"] != kind or test["stars"] in ("n.s.", "n/a"):
                continue
            a, b = sorted((position[test["a"]], position[test["b"]]))
            ax.plot([a, a, b, b], [level, level + 0.1, level + 0.1, level], color="black", linewidth=1)
            ax.text((a + b) / 2, level + 0.1, test["stars"], ha="center", va="bottom", fontsize=12)
            level += 0.45
        ax.set_ylim(0, max(5.6, level + 0.2))
        ax.set_yticks(range(0, 6))
        ax.set_xticks(xs, [_wrap(r["method"]) for r in rows], fontsize=8)
        ax.set_ylabel("MOS (1 = Very Bad, 5 = Very Good)")
        ax.set_title(f"({chr(ord('a') + index)}) {PANEL_TITLES.get(kind, kind)}")
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Mean opinion scores (error bars: std; *: p<0.05, **: p<0.01, ***: p<0.001)", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 22) -> str:
    words, lines = text.split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + len(word) + 1 > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return "\n".join(lines)


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.2e}" if 0 < abs(value) < 10**-digits else f"{value:.{digits}f}"
    return escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_number(r[c])}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html(result: dict, png: Path | None) -> str:
    image = ""
    if png is not None:
        data = base64.b64encode(png.read_bytes()).decode()
        image = f"<img src='data:image/png;base64,{data}' alt='MOS per method'>"
    excluded = (
        _table([{"rater": r, "reason": why} for r, why in result["excluded"].items()], ["rater", "reason"])
        if result["excluded"]
        else "<p>No rater excluded.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>User study report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "img{max-width:100%}</style></head><body><h1>User study: mean opinion scores</h1>"
        f"<p>{result['raters']} raters, {result['votes']} votes analysed (of {result['all_raters']} raters, "
        f"{result['all_votes']} votes); manifest {escape(result['manifest_sha256'][:12])}.</p>{image}"
        "<h2>MOS and standard deviation</h2>"
        + _table(result["mos"], ["kind", "method", "mos", "std", "votes", "raters"])
        + "<h2>Pair-wise t-tests</h2><p>*: p &lt; 0.05, **: p &lt; 0.01, ***: p &lt; 0.001, n.s.: not significant.</p>"
        + _table(result["ttests"], ["kind", "a", "b", "test", "n", "t", "p", "stars"])
        + f"<h2>Excluded raters</h2>{excluded}</body></html>"
    )


def summary(result: dict) -> str:
    """The report as text, for the console."""
    lines = [
        f"{result['raters']} raters, {result['votes']} votes (of {result['all_raters']} raters, {result['all_votes']} votes)"
    ]
    for row in result["mos"]:
        lines.append(
            f"  {row['kind']:5s}  {row['method']:40s}  MOS {row['mos']:.2f} +- {_number(row['std'], 2)}  ({row['votes']} votes)"
        )
    for row in result["ttests"]:
        lines.append(
            f"  {row['kind']:5s}  {row['a']} vs {row['b']}: p={_number(row['p'])} {row['stars']} ({row['test']}, n={row['n']})"
        )
    for rater, why in result["excluded"].items():
        lines.append(f"  excluded rater {rater}: {why}")
    return "\n".join(lines)
