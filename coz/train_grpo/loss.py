"""Group-relative advantages and the clipped-ratio GRPO loss (paper Algorithm 2, lines 17-19; Shao et
al. [34]).

Every formula here equals TRL 1.16's ``GRPOTrainer`` on the same tensors (``tests/test_grpo_loss.py``
uses TRL as the oracle), but every constant is an argument: nothing follows a library default.

Shapes: N completions = (pairs x G generations), grouped consecutively (pair 0's G completions
first); T completion tokens.
"""

from __future__ import annotations

import torch

SCALES = ("none", "group", "batch")
AGGREGATIONS = ("grpo", "bnpo", "dr_grpo")


def group_advantages(
    rewards: torch.Tensor, generations: int, scale: str = "none", eps: float = 1e-4
) -> torch.Tensor:
    """(N,) rewards -> (N,) advantages: each reward minus its group's mean (Algorithm 2, line 17).

    ``scale``: ``none`` is the paper's mean baseline; ``group`` divides by the group's standard
    deviation (Bessel-corrected) plus ``eps``, as in DeepSeekMath's GRPO [34]; ``batch`` by the whole
    batch's. Gather the rewards of every process before calling this (groups may span processes).
    """
    if scale not in SCALES:
        raise ValueError(f"advantage scale {scale!r}: use one of {', '.join(SCALES)}")
    if generations < 1 or rewards.numel() % generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {generations}")
    grouped = rewards.view(-1, generations)  # (pairs, G)
    mean = grouped.mean(dim=1).repeat_interleave(generations)
    advantages = rewards - mean
    if scale == "group":
        std = grouped.std(dim=1) if generations > 1 else torch.zeros(len(grouped), device=rewards.device)
        advantages = advantages / (std.repeat_interleave(generations) + eps)
    elif scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.zeros((), device=rewards.device)
        advantages = advantages / (std + eps)
    return advantages


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] without materialising the (..., V) log-probabilities: (B, T, V), (B, T) ->
    (B, T). Computed in float32 whatever the logits' dtype."""
    logits = logits.float()
    picked = torch.gather(logits, -1, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """(N, T) ids -> (N, T) 0/1 mask of the tokens up to and including the first end-of-sequence token."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    length = completion_ids.size(1)
    first = torch.full((completion_ids.size(0),), length, device=completion_ids.device)
    has = is_eos.any(dim=1)
    first[has] = is_eos.int().argmax(dim=1)[has]
    positions = torch.arange(length, device=completion_ids.device).expand_as(completion_ids)
    return (positions <= first.unsqueeze(1)).int()


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    aggregation: str = "grpo",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped-ratio policy loss with an optional KL penalty to the reference.

    Per token: ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta KL``, with r = exp(logp - old_logp)
    and the k3 estimator KL = exp(ref - logp) - (ref - logp) - 1 (always >= 0). ``aggregation``:
    ``grpo`` averages each completion's tokens, then the completions; ``bnpo`` averages all tokens of
    the batch; ``dr_grpo`` sums and divides by N x ``max_completion_length``.

    logps, old_logps, ref_logps, mask: (N, T); advantages: (N,). Returns the loss and detached stats.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"loss aggregation {aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
    mask = mask.to(logps.dtype)
    adv = advantages.unsqueeze(1)  # (N, 1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (N, T)
    stats: dict[str, torch.Tensor] = {}
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference log-probabilities")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
        stats["kl"] = _masked_mean(kl, mask).detach()
    if aggregation == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif aggregation == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        if max_completion_length is None:
            raise ValueError("dr_grpo aggregation needs max_completion_length")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    low = (ratio < 1 - epsilon_low) & (adv < 0)
    high = (ratio > 1 + epsilon_high) & (adv > 0)
    stats["clip_ratio"] = _masked_mean((low | high).to(mask.dtype), mask).detach()
    return loss, stats


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)
