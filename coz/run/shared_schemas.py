"""The schemas several tools share (:mod:`coz.run.schema`): ``logger=`` and ``trainer.*``."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from coz.run.schema import one_of, words


@dataclass
class Logger:  # csv, none
    name: str = MISSING


@dataclass
class WandbLogger(Logger):  # wandb, both
    project: str = MISSING
    entity: str | None = MISSING
    group: str | None = MISSING
    mode: str = one_of("offline", "online", "disabled")
    tags: list[str] = words()


LOGGERS = {"csv": Logger, "none": Logger, "wandb": WandbLogger, "both": WandbLogger}
