"""Quiet by default: the listed third-party lines are dropped, everything else passes."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

from coz.run.quiet import WANDB_NOTES, quiet_third_party


def test_the_listed_lines_are_dropped_and_others_kept(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    assert len(logging.getLogger("pyiqa").filters) == 1
    with caplog.at_level(logging.INFO):
        logging.getLogger("pyiqa").info("Network [NIQE] is created.")
        logging.getLogger("pyiqa").info("Loading pretrained model NIQE from /cache/niqe.mat")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    assert [r.getMessage() for r in caplog.records] == ["Loading pretrained model NIQE from /cache/niqe.mat"]


def test_the_listed_warnings_are_ignored():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use TreeSpec", FutureWarning, stacklevel=1
        )
        warnings.warn("something that matters", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something that matters"]


def test_wandbs_anonymous_note_is_marked_as_shown_before_a_wandb_run(tmp_path):
    from wandb.errors import term

    from coz.run.wandb_run import wandb_init_args

    term._printed_messages.clear()
    wandb_init_args({"mode": "offline"}, tmp_path, "zoom", {})
    assert all(f"{term.WARN_STRING} {note}" in term._printed_messages for note in WANDB_NOTES)


def test_the_filters_do_not_import_wandb():
    """A run without W&B does not pay wandb's import (about a second of CPU in every tool)."""
    code = "import sys; from coz.run.quiet import quiet_third_party; quiet_third_party(); print('wandb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
