"""The schema of ``coz.app``'s config (conf/app/app.yaml; :mod:`coz.run.schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from coz.backbones.schema import BACKBONES
from coz.prompts.schema import PROMPTS
from coz.run.schema import number, rule, whole


def _all_in(options: dict, at_least: int = 0) -> Any:
    names = ", ".join(sorted(options))
    what = f"a list of at least one of {names}" if at_least else f"a list of {names}"
    return rule(what, lambda v: isinstance(v, list) and len(v) >= at_least and all(x in options for x in v))


@dataclass
class App:
    host: str = MISSING
    port: int = whole(0, 65535)
    backbones: list[str] = _all_in(BACKBONES, at_least=1)  # the first is the page's default
    cached_backbones: list[str] = _all_in(BACKBONES)
    prompts: list[str] = _all_in(PROMPTS, at_least=1)
    cached_prompts: list[str] = _all_in(PROMPTS)
    steps: int = whole(1)
    max_steps: int = whole(1)
    full_max_side: int = whole(0)
    zoom_overrides: list[str] = MISSING
    max_upload_mb: float = number(above=0)
    upload_ttl_s: float = number(above=0)
    max_pending_upload_mb: float = number(above=0)
    max_pixels: int = whole(1)
    queue_size: int = whole(1)
    samples: str = MISSING
    keep_jobs: int = whole(1)  # the job just finished must stay downloadable
