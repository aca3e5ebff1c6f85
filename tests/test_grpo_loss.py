"""Group advantages and the clipped-ratio loss equal TRL 1.16's GRPOTrainer on the same tensors: TRL's
own code is the oracle (its advantage block is executed from its source, its ``_compute_loss`` is called
with the log-probabilities patched in)."""

from __future__ import annotations

import inspect
import textwrap
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from coz.train_grpo.loss import completion_mask, group_advantages, grpo_loss, selective_log_softmax


def trl_advantages(rewards: torch.Tensor, generations: int, scale: str) -> torch.Tensor:
    """TRL's "sum_then_normalize" advantage block, run from its source on our rewards."""
    from trl.trainer.grpo_trainer import GRPOTrainer  # TRL (a dev dependency) is the oracle; imported
    from trl.trainer.utils import nanstd  # here, not at collection (~4 s in every pytest worker)

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start = source.index('if self.multi_objective_aggregation == "sum_then_normalize":')
    start = source.rindex("\n", 0, start) + 1
    end = source.index('elif self.multi_objective_aggregation == "normalize_then_sum":')
    namespace = {
        "self": SimpleNamespace(
            multi_objective_aggregation="sum_then_normalize",
            reward_weights=torch.ones(1),
            scale_rewards=scale,
        ),
        "rewards_per_func": rewards.unsqueeze(1),
        "unscorable_mask": torch.zeros(len(rewards), dtype=torch.bool),
        "num_generations": generations,
        "device": "cpu",
        "torch": torch,
        "nanstd": nanstd,
    }
    exec(textwrap.dedent(source[start:end]), namespace)  # noqa: S102 - the oracle's own lines
    return torch.nan_to_num(namespace["advantages"], nan=0.0)


@pytest.mark.parametrize("scale", ["none", "group", "batch"])
@pytest.mark.parametrize("generations", [2, 4])
def test_advantages_equal_trl(scale, generations):
    torch.manual_seed(0)
    rewards = torch.rand(6 * generations) * 2 - 0.5
    rewards[:generations] = 0.7  # a group with equal rewards: zero advantages, no division blow-up
    ours = group_advantages(rewards, generations, scale, eps=1e-4)
    torch.testing.assert_close(ours, trl_advantages(rewards, generations, scale), rtol=0, atol=1e-6)
    assert torch.all(ours[:generations] == 0)


def test_the_papers_baseline_is_the_group_mean():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 1.0])
    assert group_advantages(rewards, 2).tolist() == [0.5, -0.5, 0.0, 0.0, 0.5, -0.5]
    with pytest.raises(ValueError):
        group_advantages(rewards, 4)


def trl_loss(logps, old, ref, advantages, mask, loss_type, beta, eps_low, eps_high, max_len):
    """TRL's ``_compute_loss`` on these tensors (the model's log-probabilities patched in)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    trainer = object.__new__(GRPOTrainer)
    identity = SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction="sum": x, autocast=None)
    trainer.__dict__.update(
        loss_type=loss_type,
        beta=beta,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=max_len,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False),
        model=SimpleNamespace(training=True),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        accelerator=identity,
    )
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    n, t = logps.shape
    inputs = {
        "prompt_ids": torch.zeros((n, 3), dtype=torch.long),
        "prompt_mask": torch.ones((n, 3), dtype=torch.long),
        "completion_ids": torch.zeros((n, t), dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(aggregation, beta):
    torch.manual_seed(1)
    n, t = 8, 7
    base = torch.randn(n, t) * 0.5 - 2
    old = base + torch.randn(n, t) * 0.3  # ratios far enough from 1 that both clips act
    ref = base + torch.randn(n, t) * 0.2
    advantages = torch.randn(n)
    mask = completion_mask(torch.randint(0, 5, (n, t)), eos_ids=[0])
    mask[0] = 1

    ours_in = base.clone().requires_grad_(True)
    ours, stats = grpo_loss(
        ours_in, old, advantages, mask, ref, beta, 0.2, 0.28, aggregation, max_completion_length=t + 3
    )
    ours.backward()
    theirs_in = base.clone().requires_grad_(True)
    theirs, metrics = trl_loss(theirs_in, old, ref, advantages, mask, aggregation, beta, 0.2, 0.28, t + 3)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-6, atol=1e-7)
    assert float(stats["clip_ratio"]) == pytest.approx(metrics["clip_ratio/region_mean"][0], abs=1e-6)
    assert 0 < float(stats["clip_ratio"]) < 1
    if beta:
        assert float(stats["kl"]) == pytest.approx(metrics["kl"][0], rel=1e-6)


def test_on_policy_loss_is_minus_the_mean_advantage_and_kl_vanishes_at_the_reference():
    logps = torch.randn(4, 5)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss, stats = grpo_loss(logps, logps, advantages, torch.ones(4, 5), logps, beta=0.04)
    assert float(loss) == pytest.approx(-float(advantages.mean()), abs=1e-7)
    assert float(stats["kl"]) == 0.0


def test_completion_mask_and_log_softmax():
    ids = torch.tensor([[5, 6, 9, 9], [5, 7, 8, 4], [9, 1, 1, 1]])
    assert completion_mask(ids, [9]).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    logits = torch.randn(2, 3, 11)
    picked = torch.randint(0, 11, (2, 3))
    expected = torch.log_softmax(logits, -1).gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax(logits, picked), expected)
