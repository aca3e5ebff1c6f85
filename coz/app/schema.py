"""The schema of ``coz.app``'s config (conf/app/app.yaml; :mod:`coz.run.schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from coz.backbones.schema import BACKBONES
from coz.prompts.schema import PROMPTS
from coz.run.schema import number, rule, whole


def _all_in(options: dict) -> Any:
    names = ", ".join(sorted(options))
    return rule(f"a list of {names}", lambda v: isinstance(v, list) and all(x in options for x in v))


@dataclass
class App:
    host: str = MISSING
    port: int = whole(0, 65535)
    backbones: list[str] = _all_in(BACKBONES)
    cached_backbones: list[str] = _all_in(BACKBONES)
    prompts: list[str] = _all_in(PROMPTS)
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
    keep_jobs: int = whole(0)
