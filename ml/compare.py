"""Paired comparison of two models on the same rows: McNemar for right/wrong, Wilcoxon for errors.

scipy.stats is imported by the functions that test, not with this module: it costs about a second of CPU,
and most processes that import this module at start (web workers, every manage.py) never compare models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Scores are ratios of counts: a difference equal to the margin must not fail it by a rounding error.
TOLERANCE = 1e-9
# Below this many discordant rows McNemar's test is the exact binomial one; above, the chi-square with
# continuity correction, which is then within a rounding error of it.
MCNEMAR_EXACT_MAX = 50


@dataclass(frozen=True)
class PairedComparison:
    """Champion against challenger on `n` shared rows.

    Classification: scores are accuracies; `champion_only` and `challenger_only` count the rows only one
    of them got right (McNemar's discordant pairs). Regression: scores are mean absolute errors, and the
    test is Wilcoxon's signed-rank test on the paired absolute errors. `p_value` is two-sided; None when
    there is nothing to test (no rows).
    """

    test: str
    n: int
    champion_score: float | None
    challenger_score: float | None
    higher_is_better: bool
    p_value: float | None
    champion_only: int = 0
    challenger_only: int = 0

    @property
    def improvement(self) -> float | None:
        """How much better the challenger is, in the score's own units (positive: better)."""
        if self.champion_score is None or self.challenger_score is None:
            return None
        difference = self.challenger_score - self.champion_score
        return difference if self.higher_is_better else -difference

    def beats(self, *, margin: float, alpha: float) -> bool:
        """Better by at least `margin`, and significantly (p below `alpha`)."""
        improvement = self.improvement
        return (
            improvement is not None
            and self.p_value is not None
            and improvement >= margin - TOLERANCE
            and self.p_value < alpha
        )

    def worse_by_more_than(self, margin: float) -> bool:
        improvement = self.improvement
        return improvement is not None and improvement < -margin - TOLERANCE

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "improvement": self.improvement}


def mcnemar_p_value(champion_only: int, challenger_only: int) -> float:
    """Two-sided p-value of McNemar's test from the two discordant counts."""
    n = champion_only + challenger_only
    if n == 0:
        return 1.0
    from scipy import stats

    if n <= MCNEMAR_EXACT_MAX:
        return float(min(1.0, 2 * stats.binom.cdf(min(champion_only, challenger_only), n, 0.5)))
    statistic = (abs(champion_only - challenger_only) - 1) ** 2 / n
    return float(stats.chi2.sf(statistic, 1))


def classification_compare(*, champion_right: Any, challenger_right: Any) -> PairedComparison:
    """Accuracy of each on the shared rows and McNemar's test of the difference."""
    champion = np.asarray(champion_right, dtype=bool)
    challenger = np.asarray(challenger_right, dtype=bool)
    if champion.shape != challenger.shape:
        raise ValueError("Both models must be judged on the same rows.")
    n = int(champion.size)
    if n == 0:
        return PairedComparison("mcnemar", 0, None, None, True, None)
    champion_only = int(np.sum(champion & ~challenger))
    challenger_only = int(np.sum(challenger & ~champion))
    return PairedComparison(
        test="mcnemar",
        n=n,
        champion_score=float(champion.mean()),
        challenger_score=float(challenger.mean()),
        higher_is_better=True,
        p_value=mcnemar_p_value(champion_only, challenger_only),
        champion_only=champion_only,
        challenger_only=challenger_only,
    )


def regression_compare(*, champion_errors: Any, challenger_errors: Any) -> PairedComparison:
    """Mean absolute error of each on the shared rows and Wilcoxon's signed-rank test of the difference."""
    champion = np.abs(np.asarray(champion_errors, dtype=float))
    challenger = np.abs(np.asarray(challenger_errors, dtype=float))
    if champion.shape != challenger.shape:
        raise ValueError("Both models must be judged on the same rows.")
    n = int(champion.size)
    if n == 0:
        return PairedComparison("wilcoxon", 0, None, None, False, None)
    differences = challenger - champion
    if not np.any(differences):
        p_value = 1.0
    else:
        from scipy import stats

        p_value = float(stats.wilcoxon(differences, zero_method="zsplit").pvalue)
        if math.isnan(p_value):
            p_value = 1.0
    return PairedComparison(
        test="wilcoxon",
        n=n,
        champion_score=float(champion.mean()),
        challenger_score=float(challenger.mean()),
        higher_is_better=False,
        p_value=p_value,
        champion_only=int(np.sum(champion < challenger)),
        challenger_only=int(np.sum(challenger < champion)),
    )
