"""A single self-contained HTML file (pictures embedded), so the report opens from disk in any
browser, with no server, and can be mailed or attached as one file."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from coz.evaluate.aggregate import NAMES
from coz.evaluate.tables import count_cell

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.method, th.method { text-align: left; }
td.paper { color: #777; } tr.missing td { color: #999; font-style: italic; }
img { max-width: 100%; } figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""

# Counts the pictures the browser decoded; the screenshot test reads it from the DOM.
SCRIPT = """
window.addEventListener('load', () => {
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesTotal = document.images.length;
});
"""


def render(
    title: str,
    rows: list[dict],
    columns: list[str],
    findings: list[str],
    plots: list[Path],
    strips: dict[str, list[tuple[Path, str]]],
    notes: list[str],
) -> str:
    parts = [f"<h1>{_e(title)}</h1>"]
    parts += [f"<p>{_e(n)}</p>" for n in notes]
    if findings:
        parts.append(
            "<h2>CoZ against direct SR</h2><ul>" + "".join(f"<li>{_e(f)}</li>" for f in findings) + "</ul>"
        )
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        parts.append(f"<h2>{_e(dataset)}</h2>")
        parts.append(_table([r for r in rows if r["dataset"] == dataset], columns))
    if plots:
        parts.append("<h2>Metrics against magnification</h2>")
        parts += [f'<figure><img alt="{_e(p.stem)}" src="{_data_uri(p)}"></figure>' for p in plots]
    if strips:
        parts.append("<h2>Zooms</h2>")
        for method, items in strips.items():
            parts.append(f"<h3>{_e(method)}</h3>")
            parts += [
                f'<figure><img alt="{_e(caption)}" src="{_data_uri(p)}"><figcaption>{_e(caption)}</figcaption></figure>'
                for p, caption in items
            ]
    body = "\n".join(parts)
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n{body}\n</body></html>\n"
    )


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "<th>Scale</th><th class='method'>Method</th>"
    for col in columns:
        name, lower = NAMES.get(col, (col, None))
        arrow = "" if lower is None else (" ↓" if lower else " ↑")
        head += f"<th>{_e(name + arrow)}</th><th>paper</th>"
    head += "<th>images (failed)</th>"
    body = []
    for r in rows:
        cls = " class='missing'" if r["status"] else ""
        cells = f"<td>{r['scale']}x</td><td class='method'>{_e(r['method'])}</td>"
        for col in columns:
            ours = "" if r["status"] else _fmt(r[col])
            cells += f"<td>{ours}</td><td class='paper'>{_fmt(r[col + '_paper'])}</td>"
        cells += f"<td>{_e(count_cell(r))}</td>"
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _data_uri(path: Path) -> str:
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fmt(value) -> str:
    if not isinstance(value, float):
        return _e(str(value))
    return "—" if math.isnan(value) else f"{value:.4f}"


def _e(text: str) -> str:
    return html.escape(str(text))
