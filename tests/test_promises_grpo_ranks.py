"""GRPO under DDP: each rank's advantages are its own completions' rewards minus their group's mean,
computed from every rank's gathered rewards (Algorithm 2, line 17), never rank 0's for everyone.

``GRPOModule.rollout`` runs on a stand-in for the module: a policy, critic and reward whose outputs
are fixed here, and an ``all_gather`` that returns two ranks' rewards as Lightning's would."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

G = 2
TOTALS = {0: [1.0, 3.0, 10.0, 20.0], 1: [5.0, 9.0, 0.0, 4.0]}  # two pairs x G completions per rank
# each reward minus the mean of its group of G (the paper's baseline, scale_rewards=none)
EXPECTED = {0: [-1.0, 1.0, -5.0, 5.0], 1: [-2.0, 2.0, -2.0, 2.0]}


def stand_in(rank: int) -> SimpleNamespace:
    cfg = OmegaConf.create(
        {
            "grpo": {
                "generations": G,
                "temperature": 1.0,
                "top_k": 0,
                "top_p": 1.0,
                "repetition_penalty": 1.0,
                "max_new_tokens": 4,
                "scale_rewards": "none",
                "advantage_eps": 1e-4,
                "updates_per_generation": 1,
                "beta": 0.0,
            }
        }
    )
    n = len(TOTALS[rank])
    texts = [f"rank {rank} completion {i}" for i in range(n)]
    rewards = [
        SimpleNamespace(critic=0.0, phrase=0.0, repetition=0.0, total=t, critic_failed=False)
        for t in TOTALS[rank]
    ]
    gathered: dict = {}

    def all_gather(local):
        gathered["local"] = local.clone()
        rows = {r: torch.tensor([[0.0, 0.0, 0.0, t, 0.0] for t in TOTALS[r]]) for r in TOTALS}
        rows[rank] = local  # this rank's own tensor, as Lightning gathers it
        return torch.stack([rows[r] for r in sorted(rows)])  # (world, N, 5)

    io = SimpleNamespace(
        encode=lambda firsts, seconds: {"n": len(firsts)},
        generate=lambda inputs, **kw: SimpleNamespace(texts=texts, mask=torch.ones(n, 3)),
        pad_id=lambda: 0,
    )
    return SimpleNamespace(
        cfg=cfg,
        io=io,
        critic=SimpleNamespace(answer=lambda texts, firsts, seconds: ["yes"] * len(texts)),
        rewards=SimpleNamespace(score=lambda texts, answers: rewards),
        all_gather=all_gather,
        global_rank=rank,
        device=torch.device("cpu"),
        gathered=gathered,
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_gets_the_advantages_of_its_own_completions(rank):
    from coz.train_grpo.module import GRPOModule  # Lightning: imported here, not at collection

    pairs = [SimpleNamespace(first=f"p{i}a", second=f"p{i}b") for i in range(len(TOTALS[rank]) // G)]
    module = stand_in(rank)
    out = GRPOModule.rollout(module, pairs, {})
    assert out["advantages"].tolist() == EXPECTED[rank]
    assert module.gathered["local"][:, 3].tolist() == TOTALS[rank]  # its own rewards went to the gather
    assert out["summary"]["total"] == pytest.approx(sum(TOTALS[0] + TOTALS[1]) / 8)  # over both ranks
