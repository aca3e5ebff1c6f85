"""Evaluation promises checked against hand arithmetic: NIQE is lower-better (as pyiqa, the second
library, declares it), so a CoZ NIQE under direct SR's is "CoZ better"; and the jobs of one
evaluation split by ``shard`` merge into one table cell whose mean is over all their images."""

from __future__ import annotations

import csv
import json

import pytest

from coz.evaluate.aggregate import NAMES
from coz.evaluate.report import build_report
from coz.evaluate.rows import BASE_FIELDS, RowWriter
from coz.evaluate.tables import findings


def test_niqe_is_lower_better_like_pyiqa_says():
    pyiqa_configs = pytest.importorskip("pyiqa.default_model_configs")
    assert NAMES["niqe"][1] is bool(pyiqa_configs.DEFAULT_CONFIGS["niqe"]["lower_better"]) is True


def test_a_lower_coz_niqe_is_reported_as_coz_better():
    base = {"dataset": "d", "scale": 16}
    rows = [
        {**base, "method": "Direct SR", "niqe": 7.0, "niqe_paper": 9.0},
        {**base, "method": "CoZ (VLM)", "niqe": 5.0, "niqe_paper": 10.0},
    ]
    (line,) = findings(rows, "niqe")
    assert "5.0000 vs Direct SR 7.0000: CoZ better (paper: direct SR better)" in line


def _job(root, name, shard, niqe_by_image):
    folder = root / name
    config = {"method": "nn", "seed": 0, "shard": {"index": shard, "count": 2}}
    job = {"table": "table1", "dataset": "d", "method": "NN Interpolation"}
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"job": job, "config": config}))
    writer = RowWriter(folder / "rows" / f"{shard}-0.csv", [*BASE_FIELDS, "niqe"])
    writer.append(
        {"dataset": "d", "method": "NN Interpolation", "image": image, "scale": 4, "failed": 0, "niqe": v}
        for image, v in niqe_by_image.items()
    )


def test_the_shards_of_one_evaluation_merge_into_one_cell(tmp_path):
    _job(tmp_path, "shard0", 0, {"a": 3.0, "b": 4.0})
    _job(tmp_path, "shard1", 1, {"c": 8.0})
    build_report(tmp_path)
    with (tmp_path / "table.csv").open(newline="") as f:
        ours = [r for r in csv.DictReader(f) if r["method"].startswith("NN") and r["niqe"]]
    assert [r["method"] for r in ours] == ["NN Interpolation"]
    assert float(ours[0]["niqe"]) == pytest.approx((3.0 + 4.0 + 8.0) / 3)
