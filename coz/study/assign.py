"""Which questions each rater answers, and in which order the methods appear: seeded and balanced.

Each rater slot takes the ``per_rater`` questions of a kind that were handed out least so far (ties
broken at random), so after any number of slots every question has been given to within one of
every other; every question shows all of its methods, so each method is rated exactly as often as
the questions that hold it. Question order and method order are shuffled per slot.
"""

from __future__ import annotations

import random


def balanced_questions(
    questions: list[str], per_rater: int, raters: int, rng: random.Random
) -> list[list[str]]:
    """``raters`` lists of ``min(per_rater, len(questions))`` distinct questions each."""
    counts = dict.fromkeys(questions, 0)
    plan = []
    for _ in range(raters):
        order = list(questions)
        rng.shuffle(order)
        order.sort(key=counts.__getitem__)  # stable: the shuffle breaks ties
        chosen = order[: min(per_rater, len(questions))]
        for question in chosen:
            counts[question] += 1
        rng.shuffle(chosen)
        plan.append(chosen)
    return plan


def rater_plans(
    questions: dict[str, dict], kinds: list[str], per_rater: int, raters: int, seed: int
) -> list[list[dict]]:
    """For each rater slot: ``{"question": id, "order": [method, ...]}`` per question, the kinds in the
    order given (the paper: zoom sequences first, then texts)."""
    rng = random.Random(seed)
    slots: list[list[dict]] = [[] for _ in range(raters)]
    for kind in kinds:
        ids = [q for q, spec in questions.items() if spec["kind"] == kind]
        if not ids:
            continue
        for slot, chosen in zip(slots, balanced_questions(ids, per_rater, raters, rng), strict=True):
            for question in chosen:
                order = list(questions[question]["samples"])
                rng.shuffle(order)
                slot.append({"question": question, "order": order})
    return slots
