"""Accuracy expected of unlabelled predictions, from their confidences and the holdout's calibration.

In the spirit of NannyML's CBPE: on the version's holdout, rows are grouped by confidence (the highest class
probability, ml.drift.CONFIDENCE_EDGES) and each group's observed accuracy is its calibrated confidence.
The expected accuracy of live rows is the mean calibrated confidence of their groups.

What it can see: covariate shift (inputs move to regions where the model is more or less sure) and a change
in the mix of easy and hard rows. What it cannot: concept drift. It assumes P(correct | confidence) is the
same live as on the holdout; when the relation between inputs and labels changes, the model is as sure as
before and the estimate does not move. Only live labels (feedback) see that. It also needs probabilities,
so regressors and classifiers without predict_proba get no estimate.

Its standard error adds the holdout's uncertainty about each group's accuracy (few holdout rows in a group:
wide) and the binomial spread of the live rows around their expectation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.drift import CONFIDENCE_EDGES, confidence_binner

# Holdout rows' worth of weight given to "the model is calibrated" in each confidence group: a group seen
# on 3 holdout rows leans on its own mean confidence rather than on 3 coin flips.
PRIOR_ROWS = 5.0
METRIC = "accuracy"


def calibration_map_build(*, confidences: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Per confidence group of the holdout: rows, rows answered right, and the sum of confidences."""
    histogram = confidence_binner().bin(np.asarray(confidences, dtype="float64"))
    index = np.searchsorted(np.asarray(CONFIDENCE_EDGES), confidences, side="left")
    right = np.bincount(
        index, weights=np.asarray(correct, dtype="float64"), minlength=len(CONFIDENCE_EDGES) + 1
    )
    return {
        "edges": list(CONFIDENCE_EDGES),
        "counts": histogram.counts.tolist(),
        "sums": histogram.sums.tolist() if histogram.sums is not None else None,
        "correct": right.tolist(),
        "missing": histogram.missing,
        "accuracy": float(np.mean(correct)) if len(correct) else None,
    }


@dataclass(frozen=True)
class Estimate:
    metric: str
    value: float | None
    stderr: float | None
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "stderr": self.stderr, "rows": self.rows}


def _group_accuracy(
    calibration: dict[str, Any], current_counts: np.ndarray, current_sums: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each group's calibrated accuracy and the holdout rows behind it (prior included)."""
    n = np.asarray(calibration["counts"], dtype="float64")
    right = np.asarray(calibration["correct"], dtype="float64")
    holdout_sums = np.asarray(calibration["sums"], dtype="float64")
    edges = np.asarray(calibration["edges"], dtype="float64")
    middles = np.concatenate([[edges[0] / 2], (edges[:-1] + edges[1:]) / 2, [(edges[-1] + 1) / 2]])
    # The prior's confidence: the holdout's mean confidence in the group, else the live rows', else
    # the group's middle.
    prior = middles.copy()
    if current_sums is not None:
        seen = current_counts > 0
        prior[seen] = current_sums[seen] / current_counts[seen]
    held = n > 0
    prior[held] = holdout_sums[held] / n[held]
    weight = n + PRIOR_ROWS
    return (right + PRIOR_ROWS * prior) / weight, weight


def accuracy_expected(
    *, calibration: dict[str, Any], counts: Sequence[int] | np.ndarray, sums: Sequence[float] | None = None
) -> Estimate:
    """The expected accuracy of live rows binned by confidence (`counts` per group, `sums` of their
    confidences), with its standard error; None when there are no rows."""
    m = np.asarray(counts, dtype="float64")
    total = float(m.sum())
    if total == 0:
        return Estimate(METRIC, None, None, 0)
    current_sums = np.asarray(sums, dtype="float64") if sums is not None else None
    accuracy, weight = _group_accuracy(calibration, m, current_sums)
    shares = m / total
    value = float(np.sum(shares * accuracy))
    spread = accuracy * (1 - accuracy)
    variance = float(np.sum(shares**2 * spread / weight) + np.sum(m * spread) / total**2)
    return Estimate(METRIC, round(value, 6), round(math.sqrt(variance), 6), int(total))
