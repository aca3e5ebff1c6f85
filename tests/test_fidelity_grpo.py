"""GRPO as the paper's stated setup, SWIFT (issues 15 and 26; docs/fidelity.md "GRPO"): SWIFT's defaults
of ms-swift v3.4.1 (swift/llm/argument/rlhf_args.py, swift/trainers/arguments.py, train_args.py), reward
scaling, SWIFT's repetition reward, and this project's earlier sampling kept as experiment=unbiased."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.run.cli import quote_null_choices, tool_config_dir
from coz.train_grpo.loss import group_advantages
from coz.train_grpo.rewards import Rewards, repetition_reward


def compose_grpo(overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir("train_grpo"), version_base="1.3"):
        return compose(config_name="train_grpo", overrides=quote_null_choices(overrides))


def test_scale_rewards_group_is_the_default_and_gives_plus_minus_0707_for_two_generations():
    cfg = compose_grpo([])
    assert cfg.grpo.scale_rewards == "group" and cfg.grpo.generations == 2
    rewards = torch.tensor([1.0, 0.5, 0.2, 0.2])  # two groups of G = 2: unequal, equal
    grouped = group_advantages(rewards, 2, str(cfg.grpo.scale_rewards), float(cfg.grpo.advantage_eps))
    torch.testing.assert_close(grouped, torch.tensor([0.7071, -0.7071, 0.0, 0.0]), atol=1e-3, rtol=0)
    plain = group_advantages(rewards, 2, "none")  # Algorithm 2, line 17: the mean baseline
    torch.testing.assert_close(plain, torch.tensor([0.25, -0.25, 0.0, 0.0]))


SWIFT_3_4_1 = {  # ms-swift v3.4.1's GRPO defaults for a LoRA run, read from its argument classes
    "grpo.temperature": 0.9,  # RLHFArguments.temperature
    "grpo.top_k": 50,  # GRPOArgumentsMixin.top_k
    "grpo.top_p": 0.9,
    "grpo.repetition_penalty": 1.0,
    "grpo.max_new_tokens": 512,  # GRPOArguments.max_completion_length
    "grpo.beta": 0.04,  # _init_grpo: beta None -> 0.04
    "grpo.epsilon_low": 0.2,  # epsilon; epsilon_high None -> epsilon
    "grpo.epsilon_high": 0.2,
    "grpo.scale_rewards": "group",  # scale_rewards True: / (group std + 1e-4)
    "grpo.advantage_eps": 1e-4,
    "grpo.loss_aggregation": "grpo",
    "grpo.updates_per_generation": 1,  # num_iterations 1
    "optim.lr": 1e-4,  # learning_rate None -> 1e-4 unless train_type full
    "optim.betas": [0.9, 0.95],  # adam_beta2 0.95
    "optim.weight_decay": 0.1,
    "optim.schedule": "cosine",  # lr_scheduler_type
    "optim.max_grad_norm": 1.0,
    "optim.warmup_steps": 0,
    "rewards.repetition_words": "whitespace",  # RepetitionPenalty: text.lower().split()
    "rewards.ngram": 3,  # repetition_n_grams
    "rewards.max_penalty": -1.0,  # repetition_max_penalty
    "lora.r": 8,  # lora_rank, lora_alpha, lora_dropout
    "lora.alpha": 32,
    "lora.dropout": 0.05,
}


def _values(cfg, keys):
    from omegaconf import OmegaConf

    return {
        k: OmegaConf.to_container(OmegaConf.select(cfg, k))
        if k == "optim.betas"
        else OmegaConf.select(cfg, k)
        for k in keys
    }


def test_defaults_are_swifts_grpo_defaults_of_the_release_current_when_the_paper_was_written():
    assert _values(compose_grpo([]), SWIFT_3_4_1) == SWIFT_3_4_1
    assert _values(compose_grpo(["experiment=swift"]), SWIFT_3_4_1) == SWIFT_3_4_1  # pinned


def test_unbiased_preset_keeps_the_earlier_full_distribution_sampling():
    cfg = compose_grpo(["experiment=unbiased"])
    g, o = cfg.grpo, cfg.optim
    assert (g.temperature, g.top_k, g.top_p, g.max_new_tokens) == (1.0, 0, 1.0, 128)
    assert (o.lr, list(o.betas), o.weight_decay, o.schedule) == (1e-5, [0.9, 0.999], 0.0, "constant")
    assert cfg.rewards.repetition_words == "letters" and g.scale_rewards == "group"


def test_swift_repetition_words_keep_punctuation():
    text = "fur, texture fur texture fur, texture"
    # letters: "fur texture fur texture fur texture" -> trigrams fur-texture-fur x2, texture-fur-texture x2
    assert repetition_reward(text, 3, -1.0, "letters") == pytest.approx(-0.5)
    # whitespace: "fur," and "fur" differ -> 4 trigrams, all distinct
    assert repetition_reward(text, 3, -1.0, "whitespace") == 0.0
    assert Rewards(repetition_words="whitespace")("a b c a b c", "50").repetition == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="repetition_words='spaces'"):
        Rewards(repetition_words="spaces")
