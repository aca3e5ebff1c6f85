"""Benchmark reports: machine and versions recorded, earlier sections kept when only some rerun."""

import json

import coz.bench.report as bench


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


def test_the_real_size_grpo_benchmark_runs_a_valid_command_line(tmp_path):
    """``--only grpo_3b`` measures the training loop with the 3B-shaped twin: its overrides must
    compose into the train_grpo config (a renamed key would only fail on a GPU machine)."""
    from hydra import compose, initialize_config_dir

    from coz.bench.grpo import SETTINGS, step_loop_overrides
    from coz.run.cli import quote_null_choices, tool_config_dir
    from coz.train_grpo.tool import check_config

    for device, settings in SETTINGS.items():
        overrides = step_loop_overrides(4, device, settings, tmp_path)
        overrides = [o for o in overrides if not o.startswith("hydra.")]
        with initialize_config_dir(config_dir=tool_config_dir("train_grpo"), version_base="1.3"):
            cfg = compose(config_name="train_grpo", overrides=quote_null_choices(overrides))
        assert cfg.prompt.shape == "3b" and cfg.prompt.dtype == "bfloat16" and cfg.critic.name == "keyword"
        assert cfg.grpo.generations == 4 and cfg.grpo.max_new_tokens == settings["max_new_tokens"]
        assert cfg.trainer.accelerator == ("gpu" if device == "cuda" else "cpu")
        check_config(cfg)  # every key and value the typed config allows
    assert SETTINGS["cuda"]["generations"] == [2, 4, 8] and SETTINGS["cuda"]["max_new_tokens"] == 128
