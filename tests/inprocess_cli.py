"""Run a coz command line in this process: the same entry point as ``python -m coz.<tool>`` (Hydra's
parsing, the run contract's exit codes), without paying a fresh Python's imports (seconds each).

A subprocess smoke per tool stays elsewhere (``test_zoom_cli.py``, ``test_install.py``): those check
that the module runs as a program; these check what a given backbone or option does through the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def run_cli(main: Callable[[], None], args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``main()`` with ``args`` as its command line; its exit status (0: every job succeeded)."""
    monkeypatch.setattr(sys, "argv", ["coz", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # main sets it; monkeypatch restores it after the test
    with pytest.raises(SystemExit) as exit_:
        main()
    return int(exit_.value.code or 0)


def run_cli_here(
    main: Callable[[], None], args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> subprocess.CompletedProcess:
    """``main()`` with ``args``, run from ``cwd`` as a program would be: its exit status and what it
    wrote to stdout and stderr (``capfd``: the file descriptors, as a subprocess's pipes would see)."""
    capfd.readouterr()
    with monkeypatch.context() as patch:
        patch.chdir(cwd)
        code = run_cli(main, args, patch)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)
