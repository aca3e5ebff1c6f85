"""GRPO variants of implementation-facts.md section 7 (issue 15): reward scaling, SWIFT's sampling and
repetition reward."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from coz.run.cli import rewrite_overrides, tool_config_dir
from coz.train_grpo.loss import group_advantages
from coz.train_grpo.rewards import Rewards, repetition_reward


def compose_grpo(overrides: list[str]):
    with initialize_config_dir(config_dir=tool_config_dir("train_grpo"), version_base="1.3"):
        return compose(config_name="train_grpo", overrides=rewrite_overrides(overrides, "train_grpo"))


def test_scale_rewards_group_is_the_default_and_gives_plus_minus_0707_for_two_generations():
    cfg = compose_grpo([])
    assert cfg.grpo.scale_rewards == "group" and cfg.grpo.generations == 2
    rewards = torch.tensor([1.0, 0.5, 0.2, 0.2])  # two groups of G = 2: unequal, equal
    grouped = group_advantages(rewards, 2, str(cfg.grpo.scale_rewards), float(cfg.grpo.advantage_eps))
    torch.testing.assert_close(grouped, torch.tensor([0.7071, -0.7071, 0.0, 0.0]), atol=1e-3, rtol=0)
    plain = group_advantages(rewards, 2, "none")  # Algorithm 2, line 17: the mean baseline
    torch.testing.assert_close(plain, torch.tensor([0.25, -0.25, 0.0, 0.0]))


def test_swift_preset_sets_section_7_sampling_and_reward_variants():
    cfg = compose_grpo(["experiment=swift"])
    g = cfg.grpo
    assert (g.temperature, g.top_k, g.top_p, g.max_new_tokens) == (0.9, 50, 0.9, 512)
    assert (
        cfg.optim.lr == 1e-4 and g.scale_rewards == "group" and cfg.rewards.repetition_words == "whitespace"
    )
    default = compose_grpo([])
    assert (default.grpo.temperature, default.grpo.top_k, default.rewards.repetition_words) == (
        1.0,
        0,
        "letters",
    )


def test_swift_repetition_words_keep_punctuation():
    text = "fur, texture fur texture fur, texture"
    # letters: "fur texture fur texture fur texture" -> trigrams fur-texture-fur x2, texture-fur-texture x2
    assert repetition_reward(text, 3, -1.0, "letters") == pytest.approx(-0.5)
    # whitespace: "fur," and "fur" differ -> 4 trigrams, all distinct
    assert repetition_reward(text, 3, -1.0, "whitespace") == 0.0
    assert Rewards(repetition_words="whitespace")("a b c a b c", "50").repetition == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="repetition_words='spaces'"):
        Rewards(repetition_words="spaces")
