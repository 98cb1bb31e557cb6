"""The live-quality arithmetic against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score

from feedback import quality


def test_the_wilson_interval_matches_values_computed_by_hand():
    # 8 of 10: p = 0.8, z = 1.96; centre (0.8 + 0.19208) / 1.38415,
    # half 1.96 * sqrt(0.016 + 0.0009604) / 1.38415.
    low, high = quality.wilson_interval(8, 10)
    assert low == pytest.approx(0.4901625, abs=1e-6)
    assert high == pytest.approx(0.9433178, abs=1e-6)


def test_three_right_of_three_is_not_certain():
    low, high = quality.wilson_interval(3, 3)
    assert high == 1.0
    assert low == pytest.approx(0.43850, abs=1e-5)


def test_no_trials_has_no_interval():
    assert quality.wilson_interval(0, 0) is None


@given(st.integers(min_value=1, max_value=10_000), st.data())
def test_the_interval_holds_the_proportion_and_stays_within_zero_and_one(n, data):
    k = data.draw(st.integers(min_value=0, max_value=n))
    low, high = quality.wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_classification_figures_match_scikit_learn():
    y_true = ["a", "a", "b", "b", "b", "c", "c", "a", "c", "b"]
    y_pred = ["a", "b", "b", "b", "a", "c", "a", "a", "c", "c"]
    cells: dict[tuple[str, str], int] = {}
    for t, p in zip(y_true, y_pred, strict=True):
        cells[(p, t)] = cells.get((p, t), 0) + 1

    figures = quality.classification_figures(cells, ["a", "b", "c"])

    assert figures["n"] == 10
    assert figures["accuracy"] == pytest.approx(0.6)
    assert figures["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    by_label = {row["label"]: row for row in figures["per_class"]}
    precision = precision_score(y_true, y_pred, average=None, labels=["a", "b", "c"])
    recall = recall_score(y_true, y_pred, average=None, labels=["a", "b", "c"])
    for index, label in enumerate("abc"):
        assert by_label[label]["precision"] == pytest.approx(precision[index])
        assert by_label[label]["recall"] == pytest.approx(recall[index])
    # Rows: predicted a, b, c; columns: true a, b, c.
    assert figures["confusion"] == {"labels": ["a", "b", "c"], "matrix": [[2, 1, 1], [1, 2, 0], [0, 1, 2]]}


def test_a_wrong_row_without_its_true_class_counts_against_precision_and_accuracy_only():
    cells = {("a", "a"): 3, ("a", ""): 1, ("b", "b"): 2}

    figures = quality.classification_figures(cells, ["a", "b", "c"])

    assert figures["accuracy"] == pytest.approx(5 / 6)
    assert figures["unknown_true_class"] == 1
    by_label = {row["label"]: row for row in figures["per_class"]}
    assert by_label["a"]["precision"] == pytest.approx(3 / 4)
    assert by_label["a"]["recall"] == 1.0
    assert by_label["c"] == {"label": "c", "precision": None, "recall": None, "support": 0, "predicted": 0}
    assert figures["confusion"]["labels"] == ["a", "b", "c", ""]


def test_regression_figures_are_mae_and_rmse():
    errors = [1.0, -2.0, 4.0]
    figures = quality.regression_figures(3, sum(map(abs, errors)), sum(e * e for e in errors))
    assert figures == {"n": 3, "mae": pytest.approx(7 / 3), "rmse": pytest.approx(math.sqrt(21 / 3))}


def test_the_median_delay_is_interpolated_inside_its_bin():
    # 1 delay in [10 s, 60 s), 2 in [60 s, 300 s): the median (1.5th of 3) is half-way into the second bin's
    # first half: 60 + 240 * 0.5 / 2.
    counts = {quality.delay_bin(30): 1, quality.delay_bin(100): 2}
    assert quality.delay_median(counts) == pytest.approx(120.0)
    assert quality.delay_median({}) is None


def test_delay_bins_cover_every_delay():
    assert quality.delay_bin(-5) == 0
    assert quality.delay_bin(0.5) == 0
    assert quality.delay_bin(86_400) == quality.DELAY_EDGES.index(86_400)
    assert quality.delay_bin(10**9) == len(quality.DELAY_EDGES) - 1
