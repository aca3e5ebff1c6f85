"""Rebuild the report of an evaluation folder (one job, or a whole sweep) from its rows:
``table.csv``, ``table.md``, ``plots/<metric>.png`` and ``report.html``.

Every job rebuilds the report of its sweep when it finishes, so the last job leaves the complete
table. ``python -m coz.evaluate.report FOLDER`` rebuilds it by hand, e.g. after merging the
folders of jobs that ran on other machines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from coz.evaluate.aggregate import aggregate, method_order, paper_numbers
from coz.evaluate.plots import plot_metric
from coz.evaluate.rows import read_rows
from coz.evaluate.tables import display_columns, findings, merged, to_csv, to_markdown
from coz.run.atomic import write_text_atomic

TITLES = {
    "table1": "Table 1 (NN interpolation, direct SR and CoZ per scale)",
    "table2": "Table 2 (S3Diff and S3Diff + CoZ)",
    "table3": "Table 3 (seconds per image: SR and prompt extraction, PE)",
    "table4": "Table 4 (CoZ on OSEDiff-SD2.1)",
    "table5": "Table 5 (CoZ with the Qwen2.5-VL-7B-critic adapter)",
    "table6": "Table 6 (cosine similarity of overlapping zooms)",
}


def job_records(root: Path) -> list[tuple[Path, dict]]:
    """(folder, run record) of every evaluation job under ``root``, by folder: the ``run.json`` of
    coz.evaluate's runs (``tool``, ``job``, ``config``...), or the ``job.json`` of an older one."""
    found: dict[Path, dict] = {}
    for path in sorted(root.rglob("job.json")):
        found[path.parent] = json.loads(path.read_text())
    for path in sorted(root.rglob("run.json")):
        record = json.loads(path.read_text())
        if record.get("tool") == "evaluate" and "job" in record:
            found[path.parent] = record
    return sorted(found.items())


def build_report(root: Path, cfg: DictConfig | None = None) -> dict[str, Path]:
    """Write the report files of ``root``; returns them by name."""
    root = Path(root)
    jobs = [record for _, record in job_records(root)]
    table = cfg.table if cfg is not None else (jobs[0]["job"]["table"] if jobs else "table1")
    options = jobs[0]["config"] if jobs else {}
    not_implemented = list(cfg.not_implemented) if cfg is not None else options.get("not_implemented", [])
    rows = _distinguish_jobs(read_rows(root), root)
    records = aggregate(rows)
    datasets = {r["dataset"] for r in records}
    paper = paper_numbers(table)
    reference = cfg.paper_dataset if cfg is not None else options.get("paper_dataset")
    if reference:  # our photos against the paper's numbers on one of its datasets, for the trend
        ours = {r["method"] for r in records}
        paper = [
            {**p, "dataset": d}
            for p in paper
            if p["dataset"] == reference and p["method"] in ours
            for d in sorted(datasets)
        ]
    paper = [p for p in paper if p["dataset"] in datasets or not datasets]
    scales = {r["scale"] for r in records}
    paper = [p for p in paper if p["scale"] in scales or not scales or p["method"] in not_implemented]
    table_rows = merged(records, paper, method_order(records, paper), not_implemented)
    columns = display_columns(records, paper)
    backbones = sorted({r["backbone"] for r in records if r.get("backbone") not in ("", "-")})
    title = f"{TITLES.get(table, table)}: ours with {', '.join(backbones) or 'no model'}"
    if paper:  # a folder of the user's own is compared with nothing (unless paper_dataset= asks)
        title += ", beside the paper's numbers"

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
        from coz.evaluate.html_report import render

        notes = _notes(rows, jobs, table, backbones)
        if reference:
            notes.append(
                f"'paper' columns: the paper's {reference} numbers, shown beside ours for the trend."
            )
        page = render(title, table_rows, columns, found, plots, _strips(root, jobs), notes)
        outputs["report"] = write_text_atomic(root / "report.html", page)
    return outputs


def _distinguish_jobs(rows: list[dict], root: Path) -> list[dict]:
    """Two jobs with the same method label but different settings (``-m seed=1,2``, two backbones,
    two adapters) must not merge into one cell: their rows get the job folder's name appended to
    the label. Jobs that differ only in ``shard`` are parts of one evaluation and stay together."""
    settings: dict[tuple, dict[str, list[str]]] = {}
    for folder, data in job_records(root):
        # shards are parts of one evaluation; trainer and report say how it ran, not what it scored
        config = {k: v for k, v in data.get("config", {}).items() if k not in ("shard", "trainer", "report")}
        key = (data["job"]["dataset"], data["job"]["method"])
        signature = json.dumps(config, sort_keys=True, default=str)
        settings.setdefault(key, {}).setdefault(signature, []).append(str(folder.relative_to(root)))
    renamed = {
        job: f"{method} [{Path(job).name}]"
        for (_, method), by_signature in settings.items()
        if len(by_signature) > 1
        for jobs in by_signature.values()
        for job in jobs
    }
    return [{**r, "method": renamed[r["job"]]} if r["job"] in renamed else r for r in rows]


def _notes(rows: list[dict], jobs: list[dict], table: str, backbones: list[str]) -> list[str]:
    notes = [
        f"{len({(r['dataset'], r['image']) for r in rows})} image(s), {len(jobs)} job(s); "
        f"paper numbers from coz/evaluate/paper/{table}.csv. Failed images score the worst value "
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
    metric_failures = sum(int(r.get("failed_metrics") or 0) for r in rows if not r["failed"])
    if metric_failures:
        notes.append(
            f"{metric_failures} metric score(s) failed on otherwise good images and count with the metric's "
            "worst value (see the log); the tables give the count per cell."
        )
    return notes


def _strips(root: Path, jobs: list[dict]) -> dict[str, list[tuple[Path, str]]]:
    out: dict[str, list[tuple[Path, str]]] = {}
    for folder, record in job_records(root):
        job = record["job"]
        for strip in sorted((folder / "strips").glob("*.jpg")):
            name = strip.stem.split("-", 1)[-1]
            out.setdefault(f"{job['method']} ({job['dataset']})", []).append((strip, name))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: python -m coz.evaluate.report EVALUATION_FOLDER", file=sys.stderr)
        sys.exit(2)
    for name, path in build_report(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
