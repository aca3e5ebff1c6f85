"""Rebuild the report of an evaluation folder (one job, or a whole sweep) from its rows:
``table.csv``, ``table.md``, ``plots/<metric>.png`` and ``report.html``.

Every job rebuilds the report of its sweep when it finishes, so the last job leaves the complete
table. ``python -m coz.evaluation.report FOLDER`` rebuilds it by hand, e.g. after merging the
folders of jobs that ran on other machines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from coz.atomic import write_text_atomic
from coz.evaluation.aggregate import aggregate, method_order, paper_numbers
from coz.evaluation.plots import plot_metric
from coz.evaluation.rows import read_rows
from coz.evaluation.tables import display_columns, findings, merged, to_csv, to_markdown

TITLES = {
    "table1": "Table 1 (NN interpolation, direct SR and CoZ per scale)",
    "table2": "Table 2 (S3Diff and S3Diff + CoZ)",
    "table3": "Table 3 (seconds per image: SR and prompt extraction, PE)",
    "table4": "Table 4 (CoZ on OSEDiff-SD2.1)",
    "table5": "Table 5 (CoZ with the Qwen2.5-VL-7B-critic adapter)",
    "table6": "Table 6 (cosine similarity of overlapping zooms)",
}


def build_report(root: Path, cfg: DictConfig | None = None) -> dict[str, Path]:
    """Write the report files of ``root``; returns them by name."""
    root = Path(root)
    jobs = [json.loads(p.read_text()) for p in sorted(root.rglob("job.json"))]
    table = str(cfg.table) if cfg is not None else (jobs[0]["job"]["table"] if jobs else "table1")
    options = jobs[0]["config"] if jobs else {}
    not_implemented = (
        list(cfg.get("not_implemented") or []) if cfg is not None else options.get("not_implemented", [])
    )
    rows = read_rows(root)
    records = aggregate(rows)
    datasets = {r["dataset"] for r in records}
    paper = paper_numbers(table)
    reference = cfg.get("paper_dataset") if cfg is not None else options.get("paper_dataset")
    if reference:  # our photos against the paper's numbers on one of its datasets, for the trend
        paper = [{**p, "dataset": d} for p in paper if p["dataset"] == reference for d in sorted(datasets)]
    paper = [p for p in paper if p["dataset"] in datasets or not datasets]
    scales = {r["scale"] for r in records}
    paper = [p for p in paper if p["scale"] in scales or not scales or p["method"] in not_implemented]
    table_rows = merged(records, paper, method_order(records, paper), not_implemented)
    columns = display_columns(records, paper)
    backbones = sorted({r["backbone"] for r in records if r.get("backbone") not in ("", "-")})
    title = f"{TITLES.get(table, table)}: ours with {', '.join(backbones) or 'no model'}, beside the paper's numbers"

    outputs = {
        "table (csv)": write_text_atomic(root / "table.csv", to_csv(table_rows)),
        "table": write_text_atomic(root / "table.md", to_markdown(table_rows, columns, title)),
    }
    report_cfg = cfg.report if cfg is not None else {"plots": True, "html": True}
    plots = []
    if report_cfg["plots"] and table_rows and len(scales) > 0:
        plots = [plot_metric(table_rows, col, root / "plots" / f"{col}.png") for col in columns]
    found = findings(table_rows, columns[0]) if columns and columns[0] in ("niqe",) else []
    if report_cfg["html"]:
        from coz.evaluation.html_report import render

        notes = _notes(rows, jobs, table, backbones)
        if reference:
            notes.append(
                f"'paper' columns: the paper's {reference} numbers, shown beside ours for the trend."
            )
        page = render(title, table_rows, columns, found, plots, _strips(root, jobs), notes)
        outputs["report"] = write_text_atomic(root / "report.html", page)
    return outputs


def _notes(rows: list[dict], jobs: list[dict], table: str, backbones: list[str]) -> list[str]:
    notes = [
        f"{len({(r['dataset'], r['image']) for r in rows})} image(s), {len(jobs)} job(s); "
        f"paper numbers from experiments/{table}/paper.csv. Failed images score the worst value "
        "(NIQE 100, others 0), as in the paper, and are counted per row."
    ]
    paper_backbone = {
        "table1": "sd3",
        "table3": "sd3",
        "table4": "sd21",
        "table5": "sd3",
        "table6": "sd3",
    }.get(table)
    if paper_backbone and backbones and backbones != [paper_backbone]:
        notes.append(
            f"The paper's numbers use backbone {paper_backbone} on its datasets; ours use "
            f"{', '.join(backbones)}: compare trends (how methods rank per scale), not values."
        )
    failed = sorted({(r["method"], r["image"], r["error"]) for r in rows if r["failed"]})
    notes += [f"failed: {m} / {image}: {error}" for m, image, error in failed[:20]]
    return notes


def _strips(root: Path, jobs: list[dict]) -> dict[str, list[tuple[Path, str]]]:
    out: dict[str, list[tuple[Path, str]]] = {}
    for job_file in sorted(root.rglob("job.json")):
        job = json.loads(job_file.read_text())["job"]
        for strip in sorted((job_file.parent / "strips").glob("*.jpg")):
            name = strip.stem.split("-", 1)[-1]
            out.setdefault(f"{job['method']} ({job['dataset']})", []).append((strip, name))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: python -m coz.evaluation.report EVALUATION_FOLDER", file=sys.stderr)
        sys.exit(2)
    for name, path in build_report(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
