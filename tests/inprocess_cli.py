"""Run a coz command line in this process: the same entry point as ``python -m coz.<tool>`` (Hydra's
parsing, the run contract's exit codes), without paying a fresh Python's imports (seconds each).

:func:`start_program` starts the command as a process of its own, forked from a warm interpreter, for
what only a process shows (kill -9, signals, several runs at once). A subprocess smoke per tool stays
elsewhere (``test_zoom_cli.py``, ``test_install.py``): those check that the module runs as a program;
these check what a given backbone or option does through the CLI.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
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


# ---------------------------------------------------------------- programs forked from a warm interpreter

# What a zoom imports (torch, the chain, the writers): loaded once, in the fork server.
WARM = ("torch", "coz.zoom.tool", "coz.chain", "coz.zoom.batches", "coz.zoom.outputs", "coz.run.loggers")


def start_program(
    tool: str, args: list[str], cwd: Path, stdout: Path, stderr: Path
) -> multiprocessing.Process:
    """``python -m coz.<tool> ARGS`` as a process of its own, started in milliseconds: forked from one
    interpreter that has imported torch and coz once (``multiprocessing``'s fork server; a fresh
    Python pays seconds of imports each time). A real process, for what only a process shows: a
    kill -9, a signal, several runs at once. Its pid is the run's, its exit status ``exitcode``
    (negative: killed by that signal); ``stdout``/``stderr`` (paths) get what it writes, as files, or
    as the pipes they name (``os.mkfifo``)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WARM))  # only before the server starts: the same list always
    process = context.Process(
        target=_program, args=(tool, args, str(cwd), str(stdout), str(stderr), dict(os.environ))
    )
    process.start()
    return process


def fork_program(tool: str, args: list[str], cwd: Path) -> multiprocessing.Process:
    """``python -m coz.<tool> ARGS`` forked from this very process, its output discarded: for a tool
    whose imports this process has paid already (Lightning and the models, for the training tools),
    where a fresh Python pays them again (12-15 CPU-s) only to be killed. A real process, like
    :func:`start_program`'s. ``args`` must fix ``threads=1``: torch's OpenMP threads do not survive a
    fork, so a threaded op in the child would wait for them forever (the child starts with 1 thread;
    coz's ``threads=auto`` could raise it)."""
    if "threads=1" not in args:
        raise ValueError("fork_program: pass threads=1 (torch's OpenMP threads do not survive a fork)")
    process = multiprocessing.get_context("fork").Process(
        target=_one_thread_program, args=(tool, args, str(cwd), os.devnull, os.devnull, dict(os.environ))
    )
    process.start()
    return process


def _one_thread_program(*args) -> None:
    import torch

    torch.set_num_threads(1)
    _program(*args)


def _program(tool: str, args: list[str], cwd: str, stdout: str, stderr: str, env: dict[str, str]) -> None:
    """The forked process: the caller's environment and folder, its stdout and stderr, then the tool."""
    from coz.run.extras import tool_main

    # Ctrl-C as in a terminal: tests started in the background (``make test &``) inherit SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)  # a fifo: waits for its reader
    sys.argv = [f"coz.{tool}", *args]
    tool_main(tool)


def stop_programs() -> None:
    """Stop the fork server (a module fixture's teardown): no process is left behind, and its CPU time
    and its programs' are counted in this process's (``time make test`` sees them)."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # CPython's own (since 3.8); the next start_program starts anew
