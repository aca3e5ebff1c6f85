"""The three GRPO rewards on hand-made cases and the paper's Appendix J failures (section 3.3)."""

from __future__ import annotations

import pytest

from coz.train_grpo.rewards import (
    DEFAULT_BLACKLIST,
    Rewards,
    RewardWeights,
    parse_score,
    phrase_pattern,
    phrase_reward,
    repetition_fraction,
    repetition_reward,
)

# Appendix J.1 (Qwen2.5-VL-3B-Instruct before fine-tuning): a looping answer.
J1_LOOP = (  # verbatim up to the paper's "..."
    "fur texture orange background animal fur close-up pattern texture orange fur texture orange fur "
    "background orange fur texture orange fur background orange fur texture orange fur texture orange fur "
    "texture orange fur texture orange fur texture orange fur texture orange fur texture orange fur "
    "texture orange fur texture orange fur texture orange fur texture orange fur texture orange fur"
)
# Appendix J.2: an answer talking about the views.
J2_PHRASES = (
    "The second image shows a close-up view of a surface with a textured pattern. The texture appears "
    "to be a combination of smooth and slightly raised areas, giving it a somewhat wavy or ripple-like "
    "appearance."
)


def test_the_looping_answer_scores_near_minus_one():
    assert repetition_reward(J1_LOOP) < -0.7  # the printed part of the loop
    assert repetition_reward(J1_LOOP + " texture orange fur" * 20) < -0.85  # as it goes on
    assert repetition_reward(J1_LOOP + " texture orange fur" * 200) < -0.97
    assert repetition_reward("fur") == 0.0  # after GRPO training (J.1): one word, no n-gram
    assert repetition_reward("dog, stick, water, grass, sky") == 0.0


def test_repetition_is_a_fraction_of_repeated_ngrams():
    assert repetition_fraction("a b c a b c", n=3) == pytest.approx(1 - 3 / 4)  # abc bca cab abc
    assert repetition_fraction("a b a b a b", n=2) == pytest.approx(1 - 2 / 5)
    assert repetition_fraction("Fur, texture. fur texture", n=2) == pytest.approx(
        1 - 2 / 3
    )  # punctuation-blind
    assert repetition_fraction("", n=3) == 0.0
    assert repetition_reward("x y x y x y x y", n=2, max_penalty=-0.5) == pytest.approx(-0.5 * (1 - 2 / 7))
    for text in (J1_LOOP, J2_PHRASES, "a a a a a a a a a a a a"):
        assert -1.0 <= repetition_reward(text) <= 0.0
    with pytest.raises(ValueError):
        repetition_fraction("a b", n=0)


def test_an_answer_naming_the_second_image_loses_the_phrase_reward():
    pattern = phrase_pattern(DEFAULT_BLACKLIST)
    assert phrase_reward(J2_PHRASES, pattern) == 0.0
    assert phrase_reward("feathers", pattern) == 1.0  # after GRPO training (J.2)
    for bad in ("In the FIRST  image, a dog", "second-image: fur", "a zoom in of bark", "both images show"):
        assert phrase_reward(bad, pattern) == 0.0, bad
    for good in ("dog, stick, water", "imagery of a secondhand shop", "crab claw"):
        assert phrase_reward(good, pattern) == 1.0, good


def test_the_blacklist_is_configurable():
    assert phrase_reward("the second image", phrase_pattern(["close-up"])) == 1.0
    assert phrase_reward("a close up of fur", phrase_pattern(["close-up"])) == 0.0
    assert phrase_reward("anything", phrase_pattern([])) == 1.0


@pytest.mark.parametrize(
    "answer, score",
    [
        ("85", 85.0),
        (" 85\n", 85.0),
        ("Rating: 85/100", 85.0),
        ("**72**", 72.0),
        ("I rate it 7.5 out of 10", 7.5),
        ("100", 100.0),
        ("0", 0.0),
        ("150? no: 90", 90.0),
        ("-5, then 40", 40.0),
        ("Score: 63%", 63.0),
        ("", None),
        ("excellent description", None),
        ("1000", None),
        ("-20", None),
    ],
)
def test_critic_answers_are_parsed_robustly(answer, score):
    assert parse_score(answer) == score


def test_total_is_the_weighted_sum_and_failures_are_counted():
    rewards = Rewards()
    assert rewards.weights == RewardWeights(1.0, 0.5, 0.5)  # section 4.1
    r = rewards("dog, stick, water", "Rating: 80")
    assert (r.critic, r.phrase, r.repetition, r.critic_failed) == (0.8, 1.0, 0.0, False)
    assert r.total == pytest.approx(0.8 + 0.5)
    bad = rewards(J1_LOOP + " the second image", "I cannot rate this")
    assert bad.critic == 0.0 and bad.critic_failed and bad.phrase == 0.0
    assert bad.total == pytest.approx(0.5 * bad.repetition) and bad.total < -0.35
    custom = Rewards(RewardWeights(2.0, 0.0, 1.0), blacklist=[], score_range=(0, 10))
    assert custom("x", "7").total == pytest.approx(1.4)
    with pytest.raises(ValueError):
        Rewards(max_penalty=0.5)
