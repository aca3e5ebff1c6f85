"""Exit codes, the same for every tool.

0 done; 1 done, but some inputs were skipped (the tool lists them); 2 a usage or config error (one
line naming the option); 3 an environment error: disk full, a read-only or unwritable folder, a run
folder that is a file, a corrupt run file (one line naming the path), a missing extra, or training that
diverged to NaN/Inf (:class:`coz.errors.TrainingDiverged`: one line naming the step); 130 interrupted
(Ctrl-C: the run folder resumes on a rerun); 141 stdout closed (``| head -1``: a quiet exit, as a shell
tool killed by SIGPIPE).
"""

from __future__ import annotations

import errno

from coz.errors import CozError

DONE, SKIPPED, USAGE, ENVIRONMENT = 0, 1, 2, 3
INTERRUPTED, STDOUT_CLOSED = 130, 141  # 128 + SIGINT, 128 + SIGPIPE: what a shell reports

# OSErrors that say the machine cannot hold the run, not that the program is wrong
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.EIO,
    errno.ENAMETOOLONG,
    errno.EMFILE,
    errno.ENFILE,
}


def classify(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error the user can act on; None for a bug."""
    if isinstance(err, CozError):
        return err.exit_code, one_line(str(err))
    if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:
        where = err.filename if err.filename is not None else "(unknown path)"
        problem = err.strerror or str(err)
        if err.errno in (errno.EEXIST, errno.ENOTDIR):  # mkdir of a run folder where a file is
            problem = "a file is in the way of a folder (a run folder must be a folder)"
        return ENVIRONMENT, one_line(f"{where}: {problem}")
    if type(err).__module__.startswith("wandb."):  # W&B's own: no login, a server that refused, a setting
        return ENVIRONMENT, one_line(f"W&B: {err} (or WANDB_MODE=offline, and `wandb sync` later)")
    if isinstance(err, MemoryError):
        return ENVIRONMENT, "out of memory (try a smaller batch_size, max_pixels or zoom.size)"
    return None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def status_of(result: object) -> int:
    """A tool's result -> its exit code: 1 when it lists skipped inputs, else 0."""
    if isinstance(result, int):
        return result
    if isinstance(result, dict) and (result.get("failed") or result.get("failed_images")):
        return SKIPPED
    return DONE
