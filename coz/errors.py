"""Errors that mean "the user asked for something that cannot work": the CLI prints them as one
line, without a traceback, and exits with the error's ``exit_code`` (README "Runs, resume and exit
codes")."""


class CozError(Exception):
    """A user-facing error whose message alone says what is wrong and how to fix it (exit status 2:
    a usage or config error)."""

    exit_code = 2


class RunEnvironmentError(CozError):
    """The machine, not the command, is the problem: a full disk, a read-only or unwritable folder,
    a run folder that is a file, a corrupt run file. The message names the path (exit status 3)."""

    exit_code = 3


class TrainingDiverged(CozError):
    """A loss or a trained weight became NaN or infinite: training stops at that step, before any
    checkpoint or export of it is written (exit status 3: the run, not the command line, failed;
    rerun from the last finite checkpoint with a lower optim.lr)."""

    exit_code = 3
