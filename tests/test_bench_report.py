"""Benchmark reports: machine and versions recorded, earlier sections kept when only some rerun."""

import json

import coz.bench as bench


def test_write_report_merges_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "OUT_DIR", tmp_path)
    bench.write_report("x", {"forward": {"what": "one forward", "median_s": 1.5}})
    path = bench.write_report("x", {"memory": {"what": "peak", "peak_rss_mib": 10.0}}, command="python -m y")
    record = json.loads((tmp_path / "x.json").read_text())
    assert set(record["results"]) == {"forward", "memory"}
    assert record["results"]["forward"]["median_s"] == 1.5 and "measured" in record["results"]["memory"]
    assert {"cpu", "torch_threads"} <= set(record["machine"]) and "torch" in record["versions"]
    text = path.read_text()
    assert "## forward" in text and "## memory" in text and "`python -m y`" in text
