"""The numbers of Figure 10: mean opinion score and standard deviation per method and question kind,
and pair-wise t-tests with the paper's stars (*: p < 0.05, **: p < 0.01, ***: p < 0.001).

- MOS is the mean of all votes for a method in a kind; std is their sample standard deviation (n - 1).
- The t-tests pair by rater, as the design allows: every rater rates every method of each question
  they get, so each rater gives one mean score per method, and two methods are compared with a
  paired t-test over the raters who rated both (``scipy.stats.ttest_rel``, two-sided). With fewer than
  two such raters the votes are compared unpaired, with Welch's t-test (``scipy.stats.ttest_ind``,
  ``equal_var=False``). The test used is named on each row.
- Exclusion (``exclude.*``, off by default): raters with fewer than ``min_votes`` votes, and with
  ``constant=true`` raters who gave one score to every item (two votes or more). Excluded raters are
  listed with the rule that excluded them, never dropped silently.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np

PAIRED = "paired t-test on per-rater means (scipy.stats.ttest_rel)"
WELCH = "Welch's t-test on votes (scipy.stats.ttest_ind, equal_var=False)"


def stars(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def exclusions(votes: list[dict], min_votes: int = 0, constant: bool = False) -> dict[int, str]:
    """rater -> why they are left out."""
    by_rater: dict[int, list[int]] = {}
    for vote in votes:
        by_rater.setdefault(vote["rater_id"], []).append(vote["score"])
    out = {}
    for rater, scores in sorted(by_rater.items()):
        if len(scores) < min_votes:
            out[rater] = f"{len(scores)} votes, fewer than exclude.min_votes={min_votes}"
        elif constant and len(scores) >= 2 and len(set(scores)) == 1:
            out[rater] = f"the same score ({scores[0]}) for all {len(scores)} votes (exclude.constant=true)"
    return out


def mos_rows(votes: list[dict], methods: list[str], kinds: list[str]) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        for method in methods:
            mine = [v for v in votes if v["kind"] == kind and v["method"] == method]
            if not mine:
                continue
            scores = np.array([v["score"] for v in mine], dtype=float)
            rows.append(
                {
                    "kind": kind,
                    "method": method,
                    "mos": float(scores.mean()),
                    "std": float(scores.std(ddof=1)) if len(scores) > 1 else float("nan"),
                    "votes": len(scores),
                    "raters": len({v["rater_id"] for v in mine}),
                }
            )
    return rows


def rater_means(votes: list[dict], kind: str, method: str) -> dict[int, float]:
    sums: dict[int, list[int]] = {}
    for v in votes:
        if v["kind"] == kind and v["method"] == method:
            sums.setdefault(v["rater_id"], []).append(v["score"])
    return {rater: float(np.mean(scores)) for rater, scores in sums.items()}


def ttest_rows(votes: list[dict], methods: list[str], kinds: list[str]) -> list[dict[str, Any]]:
    from scipy import stats

    rows = []
    for kind in kinds:
        present = [m for m in methods if any(v["kind"] == kind and v["method"] == m for v in votes)]
        for a, b in combinations(present, 2):
            mean_a, mean_b = rater_means(votes, kind, a), rater_means(votes, kind, b)
            both = sorted(set(mean_a) & set(mean_b))
            if len(both) >= 2:
                test, n = PAIRED, len(both)
                with np.errstate(all="ignore"):
                    result = stats.ttest_rel([mean_a[r] for r in both], [mean_b[r] for r in both])
            else:
                scores_a = [v["score"] for v in votes if v["kind"] == kind and v["method"] == a]
                scores_b = [v["score"] for v in votes if v["kind"] == kind and v["method"] == b]
                test, n = WELCH, len(scores_a) + len(scores_b)
                if min(len(scores_a), len(scores_b)) < 2:
                    rows.append({"kind": kind, "a": a, "b": b, "test": "none (too few votes)", "n": n,
                                 "t": float("nan"), "p": float("nan"), "stars": "n/a"})  # fmt: skip
                    continue
                with np.errstate(all="ignore"):
                    result = stats.ttest_ind(scores_a, scores_b, equal_var=False)
            t, p = float(result.statistic), float(result.pvalue)
            rows.append(
                {"kind": kind, "a": a, "b": b, "test": test, "n": n, "t": t, "p": p, "stars": stars(p)}
            )
    return rows


def analyse(
    votes: list[dict], methods: list[str], kinds: list[str], min_votes: int = 0, constant: bool = False
) -> dict:
    """MOS rows, t-test rows, the excluded raters and the counts, from the votes of one study."""
    excluded = exclusions(votes, min_votes, constant)
    kept = [v for v in votes if v["rater_id"] not in excluded]
    return {
        "mos": mos_rows(kept, methods, kinds),
        "ttests": ttest_rows(kept, methods, kinds),
        "excluded": excluded,
        "raters": len({v["rater_id"] for v in kept}),
        "votes": len(kept),
        "all_raters": len({v["rater_id"] for v in votes}),
        "all_votes": len(votes),
    }
