"""Tests for ml.estimate: the confidence-based accuracy estimate under covariate shift, and its limits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ml import drift, estimate


def _draw(n: int, *, rng: np.random.Generator, x0_mean: float = 0.0, flip: bool = False):
    """Two features; P(y=1|x) = sigmoid(2 x0 - x1) (its opposite after a concept drift, `flip`)."""
    x = np.column_stack([rng.normal(x0_mean, 1.0, n), rng.normal(0.0, 1.0, n)])
    p = 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))
    y = (rng.uniform(size=n) < (1 - p if flip else p)).astype(int)
    return x, y


def _fitted(rng: np.random.Generator):
    x_train, y_train = _draw(4000, rng=rng)
    model = LogisticRegression().fit(x_train, y_train)
    x_holdout, y_holdout = _draw(2000, rng=rng)
    proba = model.predict_proba(x_holdout)
    calibration = estimate.calibration_map_build(
        confidences=proba.max(axis=1), correct=model.predict(x_holdout) == y_holdout
    )
    return model, calibration


def _estimate_and_truth(model, calibration, x, y) -> tuple[estimate.Estimate, float]:
    histogram = drift.confidence_binner().bin(model.predict_proba(x).max(axis=1))
    found = estimate.accuracy_expected(calibration=calibration, counts=histogram.counts, sums=histogram.sums)
    return found, float(np.mean(model.predict(x) == y))


@pytest.mark.parametrize("x0_mean", [0.0, 1.5, -2.0])
def test_the_estimate_is_within_three_standard_errors_of_the_true_accuracy_under_covariate_shift(
    x0_mean: float,
) -> None:
    rng = np.random.default_rng(11)
    model, calibration = _fitted(rng)
    x, y = _draw(5000, rng=rng, x0_mean=x0_mean)
    found, truth = _estimate_and_truth(model, calibration, x, y)
    assert found.rows == 5000
    assert found.stderr is not None
    assert found.value is not None
    assert abs(found.value - truth) <= max(3 * found.stderr, 0.01)
    assert found.stderr < 0.02


def test_the_estimate_follows_a_shift_that_changes_the_accuracy() -> None:
    rng = np.random.default_rng(12)
    model, calibration = _fitted(rng)
    before, _ = _estimate_and_truth(model, calibration, *_draw(5000, rng=rng))
    # Inputs far from the boundary are easy: the estimate rises with the true accuracy.
    after, truth = _estimate_and_truth(model, calibration, *_draw(5000, rng=rng, x0_mean=2.5))
    assert after.value is not None
    assert before.value is not None
    assert after.value > before.value + 0.03
    assert truth > before.value + 0.03


def test_the_estimate_cannot_see_concept_drift() -> None:
    rng = np.random.default_rng(13)
    model, calibration = _fitted(rng)
    x, y = _draw(5000, rng=rng, flip=True)
    found, truth = _estimate_and_truth(model, calibration, x, y)
    # The labels turned against the model, but its confidences did not change: the estimate stays high.
    assert found.value is not None
    assert found.value > 0.7
    assert truth < 0.3


def test_no_rows_give_no_estimate() -> None:
    _, calibration = _fitted(np.random.default_rng(14))
    found = estimate.accuracy_expected(calibration=calibration, counts=[0] * 20)
    assert found.value is None
    assert found.rows == 0
