"""The trainers' learning-rate schedules (transformers' helpers): no warm-up is a constant lr exactly;
the warm-up is transformers' linear one (lr * s / w at step s, 0 at the first step); GRPO's cosine
reaches 0 at grpo.steps. The lr of step s is the optimizer's after s scheduler steps, as in training."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.run.cli import quote_null_choices, tool_config_dir

LR = 0.5


def compose_tool(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir(name), version_base="1.3"):
        return compose(config_name=name, overrides=quote_null_choices(overrides))


def lrs(optimizer, scheduler, steps: int) -> list[float]:
    """The lr each of ``steps`` optimisation steps trains with (the trainers step after each)."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


class TinyGenerator:
    """What configure_optimizers asks of a generator: its named parameter groups."""

    def __init__(self) -> None:
        self.params = {
            "denoiser": [torch.nn.Parameter(torch.zeros(2))],
            "vae": [torch.nn.Parameter(torch.zeros(2))],
        }

    def optimiser_groups(self):
        return self.params.items()


def sr_schedules(warmup: int):
    from coz.train_sr.module import SRTrainingModule

    cfg = compose_tool("train_sr", ["experiment=smoke", f"optim.lr={LR}", f"optim.warmup_steps={warmup}"])
    module = SRTrainingModule(cfg, "unused")
    module.gen = TinyGenerator()
    optimisers, schedulers = module.configure_optimizers()
    assert len(optimisers) == len(schedulers) == 2
    return list(zip(optimisers, schedulers, strict=True))


def grpo_schedule(schedule: str, warmup: int, steps: int = 10):
    from coz.train_grpo.module import GRPOModule

    cfg = compose_tool(
        "train_grpo",
        ["experiment=smoke", f"optim.lr={LR}", f"optim.warmup_steps={warmup}", f"optim.schedule={schedule}",
         f"grpo.steps={steps}"],
    )  # fmt: skip
    module = GRPOModule(cfg, "unused", [], [])
    module.policy = torch.nn.Linear(2, 2)
    out = module.configure_optimizers()
    return out["optimizer"], out["lr_scheduler"]["scheduler"]


def test_train_sr_without_warmup_is_a_constant_lr():
    for opt, sched in sr_schedules(0):
        assert lrs(opt, sched, 5) == [LR] * 5


def test_train_sr_warmup_is_linear_from_zero():
    for opt, sched in sr_schedules(4):
        assert lrs(opt, sched, 6) == pytest.approx([0.0, LR / 4, LR / 2, 3 * LR / 4, LR, LR])


def test_train_grpo_constant_without_warmup_is_a_constant_lr():
    opt, sched = grpo_schedule("constant", 0)
    assert lrs(opt, sched, 10) == [LR] * 10


def test_train_grpo_constant_keeps_its_warmup():
    opt, sched = grpo_schedule("constant", 2)
    assert lrs(opt, sched, 4) == pytest.approx([0.0, LR / 2, LR, LR])


def test_train_grpo_cosine_warms_up_then_falls_to_zero_at_the_last_step():
    opt, sched = grpo_schedule("cosine", 2, steps=10)
    seen = lrs(opt, sched, 11)
    expected = [0.0, LR / 2] + [LR * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert seen == pytest.approx(expected)
    assert seen[10] == pytest.approx(0.0, abs=1e-12) and seen[6] == pytest.approx(LR / 2)


def test_schedules_survive_a_checkpoint_round_trip():
    """What a resume restores: the scheduler's state continues the same lr sequence."""
    opt, sched = grpo_schedule("cosine", 2, steps=10)
    lrs(opt, sched, 4)
    state = sched.state_dict()
    opt2, sched2 = grpo_schedule("cosine", 2, steps=10)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert lrs(opt2, sched2, 6) == pytest.approx(lrs(opt, sched, 6))
