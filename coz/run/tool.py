"""A tool is a declaration; :mod:`coz.run.handle` runs it.

Each command (``coz.zoom``, ``coz.evaluate``, ``coz.train_sr``, ``coz.train_grpo``) declares what only it
knows: its name, its typed config, which keys may change when a run folder is resumed, how it resumes,
the checks to make before anything is written, how its numbers are logged and its body. Everything
else (claiming the folder, the resume check, seed, threads, device, ``run.json``) is done once, in one
order, by :func:`coz.run.handle.execute`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from omegaconf import DictConfig

# keys (and whole sections) that may change on a resume in every tool: they cannot change a result
MAY_CHANGE = ("batch_size", "threads", "device", "logger")


@dataclass(frozen=True)
class Tool:
    """One command's declaration.

    - ``name``: ``zoom`` for ``python -m coz.zoom``; its config root ``conf/<name>/`` and the owner
      written into the run folders it makes.
    - ``schema``: its typed config (the dataclass of ``coz/<name>/schema.py``).
    - ``body(run) -> record``: the work, given the :class:`coz.run.handle.Run` handle; returns
      the run record (a record listing ``failed`` inputs exits 1).
    - ``check(cfg) -> plan``: the rules that span keys or read the disk (inputs, models), run before
      the folder is claimed, so a refused run leaves nothing behind; what it returns (the inputs
      found, the job) is the body's ``run.plan``.
    - ``may_change``: the config keys (or sections) that may differ when a folder is resumed, besides
      :data:`MAY_CHANGE`.
    - ``resume``: ``units`` (a rerun skips the inputs whose results are on disk) or ``checkpoint``
      (a rerun continues from the checkpoint ``resume=auto|none|PATH`` names: ``run.checkpoint``).
    - ``logger(run)``: the tool's logger, built last (``run.logger``); None: the body logs itself.
    - ``lightning``: the body hands its loop to Lightning (the seed then also seeds loader workers).
    - ``before_typing(cfg) -> cfg``: what the tool does to the composed config before it is typed
      (evaluate: a sweep's null and DAPE jobs leave out the VLM keys the sweep sets for all).
    """

    name: str
    schema: type
    body: Callable[[Any], Any]  # body(run: coz.run.handle.Run) -> record (the handle imports this)
    check: Callable[[DictConfig], Any] | None = None
    may_change: tuple[str, ...] = ()
    resume: Literal["units", "checkpoint"] = "units"
    logger: Callable[[Any], Any] | None = None
    lightning: bool = False
    before_typing: Callable[[DictConfig], DictConfig] | None = None

    def resume_keys(self) -> tuple[str, ...]:
        """Every key that may change on a resume of this tool's folders."""
        return MAY_CHANGE + self.may_change
