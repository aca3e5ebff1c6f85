"""The schema of ``coz.study``'s config (conf/study/study.yaml), see :mod:`coz.run.schema`. Its key
``from=`` is a Python keyword: the field ``from_``, read from ``from`` (:func:`coz.run.schema.alias`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, ListConfig

from coz.run.schema import alias, one_of, rule, whole, words

COMMANDS = ("build", "serve", "report")
KINDS = ("image", "text")


def _kinds(value: Any) -> bool:
    return isinstance(value, ListConfig | list) and bool(value) and all(k in KINDS for k in value)


def _step(value: Any) -> bool:
    return value == "last" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


@dataclass
class Media:
    tile: int = whole(1)
    gif_size: int = whole(1)
    view_size: int = whole(1)


@dataclass
class Instructions:
    welcome: str = MISSING
    image: str = MISSING
    text: str = MISSING
    thanks: str = MISSING


@dataclass
class Exclude:
    min_votes: int = whole(0)
    constant: bool = MISSING


@dataclass
class StudyTool:
    command: str = one_of(*COMMANDS)
    # build
    from_: list[str] = alias("from", words())
    questions: list[str] = rule("a list of image, text or both, e.g. [image,text]", _kinds)
    per_rater: int = whole(1)
    raters: int = whole(1)
    seed: int = whole(0)
    text_step: int | str = rule("last or a step number >= 1", _step)
    media: Media = MISSING
    # serve and report
    study: str | None = MISSING
    db: str | None = MISSING
    # serve
    host: str = MISSING
    port: int = whole(0, 65535)
    access_code: str | None = MISSING
    instructions: Instructions = MISSING
    # report
    exclude: Exclude = MISSING
    wandb: bool = MISSING
