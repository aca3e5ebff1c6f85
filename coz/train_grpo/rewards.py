"""The three rewards of the paper's GRPO (section 3.3, Eq. 10; Algorithm 2, lines 5-15).

    R(c) = w_critic * R_critic + w_phrase * R_phrase + w_rep * R_rep      (defaults 1.0 / 0.5 / 0.5)

- ``R_critic``: the critic VLM's 0-100 rating of the prompt, rescaled to [0, 1]. The critic answers
  in free text, so ``parse_score`` takes the first number in [0, 100] of its answer; an answer with
  none is a *failure*: it scores 0 and is counted (logged as ``critic_failures``).
- ``R_phrase``: 1 unless a blacklisted phrase ("first image", "second image", ...) appears, else 0
  (Appendix J.2: "The second image shows a close-up view ...").
- ``R_rep``: minus the fraction of repeated word n-grams, in [-1, 0] (Yeo et al. [54]; Appendix J.1:
  "texture orange fur texture orange fur ..."). Words are lower-cased runs of letters and digits,
  so "fur, texture" and "fur texture" are the same bigram (``words="letters"``); ``"whitespace"``
  is SWIFT's repetition reward, ``text.lower().split()`` with punctuation kept
  (docs/fidelity.md "GRPO").

Rewards are computed on the raw completion: the text hygiene of :mod:`coz.prompts.hygiene` is for
inference, the rewards are what teach the VLM not to need it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Viewpoint markers the SR model cannot use (paper section 3.3). Matched case-insensitively, at word
# starts, with any run of spaces, hyphens or underscores between words ("zoom-in" = "zoom in").
DEFAULT_BLACKLIST = (
    "first image",
    "second image",
    "both images",
    "the image",
    "this image",
    "first picture",
    "second picture",
    "zoom-in",
    "zoomed-in",
)

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a blacklist (None for an empty list)."""
    parts = []
    for phrase in phrases:
        words = [re.escape(w) for w in re.split(r"[\s\-_]+", str(phrase).strip()) if w]
        if words:
            parts.append(r"\b" + r"[\s\-_]+".join(words))
    return re.compile("|".join(parts), re.I) if parts else None


def phrase_reward(text: str, pattern: re.Pattern[str] | None) -> float:
    """R_phrase (Algorithm 2, lines 7-13): 1.0 unless a blacklisted phrase appears in ``text``."""
    return 0.0 if pattern is not None and pattern.search(text) else 1.0


WORD_MODES = ("letters", "whitespace")


def words(text: str, mode: str = "letters") -> list[str]:
    """Lower-cased words: runs of letters and digits (``letters``) or whitespace-split (``whitespace``)."""
    if mode == "whitespace":
        return text.lower().split()
    if mode != "letters":
        raise ValueError(f"rewards.repetition_words={mode!r}: use one of {', '.join(WORD_MODES)}")
    return [w.lower() for w in _WORD.findall(text)]


def repetition_fraction(text: str, n: int = 3, mode: str = "letters") -> float:
    """The fraction of the word n-grams of ``text`` that repeat an earlier one: 1 - unique / total.

    Texts shorter than ``n`` words have no n-gram and no repetition (0).
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    tokens = words(text, mode)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def repetition_reward(text: str, n: int = 3, max_penalty: float = -1.0, mode: str = "letters") -> float:
    """R_rep (Algorithm 2, line 14): ``max_penalty`` times the repeated fraction, in [max_penalty, 0]."""
    return max_penalty * repetition_fraction(text, n, mode) + 0.0  # + 0.0: no -0.0 in the logs


def parse_score(answer: str, low: float = 0.0, high: float = 100.0) -> float | None:
    """The first number in [low, high] in the critic's answer, or None (a failure).

    "85", "Rating: 85/100", "**72**", "I rate it 7.5 out of 10" (-> 7.5) all parse; "-5" and "150"
    are out of range and skipped, so "150? no: 90" gives 90.
    """
    for match in _NUMBER.finditer(answer):
        value = float(match.group())
        if low <= value <= high:
            return value
    return None


@dataclass(frozen=True)
class RewardWeights:
    critic: float = 1.0
    phrase: float = 0.5
    repetition: float = 0.5


@dataclass(frozen=True)
class Reward:
    """The rewards of one completion (``critic`` already rescaled to [0, 1])."""

    critic: float
    phrase: float
    repetition: float
    total: float
    critic_failed: bool
    critic_answer: str


class Rewards:
    """Combines a critic's answers with the phrase and repetition rewards (Eq. 10)."""

    NAMES = ("critic", "phrase", "repetition", "total")

    def __init__(
        self,
        weights: RewardWeights = RewardWeights(),
        blacklist: Sequence[str] = DEFAULT_BLACKLIST,
        ngram: int = 3,
        max_penalty: float = -1.0,
        score_range: tuple[float, float] = (0.0, 100.0),
        repetition_words: str = "letters",
    ) -> None:
        if repetition_words not in WORD_MODES:
            raise ValueError(
                f"rewards.repetition_words={repetition_words!r}: use one of {', '.join(WORD_MODES)}"
            )
        self.repetition_words = repetition_words
        if max_penalty > 0:
            raise ValueError(f"rewards.max_penalty={max_penalty}: the repetition penalty must be <= 0")
        low, high = map(float, score_range)
        if not high > low:
            raise ValueError(f"rewards.score_range={score_range}: need low < high")
        self.weights, self.ngram, self.max_penalty = weights, ngram, max_penalty
        self.low, self.high = low, high
        self.blacklist = tuple(blacklist)
        self.pattern = phrase_pattern(self.blacklist)

    def __call__(self, text: str, critic_answer: str) -> Reward:
        score = parse_score(critic_answer, self.low, self.high)
        critic = 0.0 if score is None else (score - self.low) / (self.high - self.low)
        phrase = phrase_reward(text, self.pattern)
        repetition = repetition_reward(text, self.ngram, self.max_penalty, self.repetition_words)
        w = self.weights
        total = w.critic * critic + w.phrase * phrase + w.repetition * repetition
        return Reward(critic, phrase, repetition, total, score is None, critic_answer)

    def score(self, texts: Sequence[str], critic_answers: Sequence[str]) -> list[Reward]:
        return [self(t, a) for t, a in zip(texts, critic_answers, strict=True)]
