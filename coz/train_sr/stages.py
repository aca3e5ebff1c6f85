"""The coarse-to-fine schedule (paper section 4.1, appendix B.3): stages of optimisation steps,
each with its degradation. The paper's default: 25K steps of Real-ESRGAN random degradation, then
20K of 4x bicubic downscaling. The stage is a function of the step, so a resumed run is in the
right stage by construction; the module logs the switch when it happens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coz.errors import CozError
from coz.train_sr.degradation import KINDS


@dataclass(frozen=True)
class Stage:
    name: str
    degradation: str
    steps: int
    start: int  # the first step of the stage


class Stages:
    def __init__(self, stages: list[dict[str, Any]]) -> None:
        if not stages:
            raise CozError("stages is empty: give at least one {name, degradation, steps}")
        self.stages: list[Stage] = []
        start = 0
        for i, s in enumerate(stages):
            kind, steps = s["degradation"], s["steps"]
            if kind not in KINDS:
                raise CozError(f"stages[{i}].degradation={kind}: use one of {', '.join(KINDS)}")
            if steps < 1:
                raise CozError(f"stages[{i}].steps={steps}: must be >= 1")
            self.stages.append(Stage(s.get("name") or kind, kind, steps, start))  # unnamed: its kind
            start += steps
        self.total = start

    def index_at(self, step: int) -> int:
        """The stage of optimisation step ``step`` (0-based); steps past the end stay in the last."""
        for i, stage in enumerate(self.stages):
            if step < stage.start + stage.steps:
                return i
        return len(self.stages) - 1

    def at(self, step: int) -> Stage:
        return self.stages[self.index_at(step)]

    def kind_at(self, step: int) -> str:
        return self.at(step).degradation

    def __len__(self) -> int:
        return len(self.stages)
