"""Concurrent coz processes split the cores instead of oversubscribing them."""

import os
import subprocess
import sys

import torch

from coz.run.cpu_share import CpuShare, available_cores


def test_fixed_threads_win(tmp_path):
    with CpuShare(threads=1, folder=tmp_path) as share:
        assert share.refresh() == 1 and torch.get_num_threads() == 1
        assert list(tmp_path.iterdir()) == []  # a fixed count does not take part in sharing


def test_live_processes_share_the_cores(tmp_path):
    cores = available_cores()
    with CpuShare(folder=tmp_path) as share:
        assert share.refresh() == cores
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (tmp_path / str(other.pid)).touch()
            assert share.refresh() == max(1, cores // 2)
        finally:
            other.kill()
            other.wait()
        assert share.refresh() == cores  # the dead process's entry is cleaned up
        assert sorted(p.name for p in tmp_path.iterdir()) == [str(os.getpid())]
    assert list(tmp_path.iterdir()) == []


def test_closing_gives_back_the_callers_thread_count(tmp_path):
    """A run from Python (API, notebook, test) must not leave torch's thread count changed: another
    count gives other float sums, so a later computation in the caller would differ bit for bit."""
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with CpuShare(threads=wanted, folder=tmp_path) as share:
        assert share.refresh() == wanted and torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before


def test_an_inner_share_leaves_the_process_registered(tmp_path):
    """A run inside a process that already takes part (a pytest worker, a second API call) must not
    unregister it when it ends: the other processes would then take every core."""
    with CpuShare(folder=tmp_path):
        with CpuShare(folder=tmp_path):
            pass
        assert sorted(p.name for p in tmp_path.iterdir()) == [str(os.getpid())]
    assert list(tmp_path.iterdir()) == []
