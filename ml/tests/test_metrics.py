"""Tests for the holdout artifacts' costs: the permutation sample, stacked predictions and the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.pipeline import Pipeline

from ml import figures as holdout_figures
from ml import metrics
from ml.pipeline import frame_prepare, pipeline_build
from tests.factories import make_classification_frame

FEATURES = [
    {"name": "age", "kind": "numeric"},
    {"name": "income", "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
]


def _fitted(task: str, rows: int = 260, estimator=None) -> tuple[Pipeline, pd.DataFrame, np.ndarray]:
    """A fitted pipeline over numeric and categorical inputs with gaps, and 160 held-out rows."""
    frame = make_classification_frame(rows=rows, seed=5)
    frame.loc[::9, "age"] = np.nan
    X = frame_prepare(frame, FEATURES)
    if task == "classification":
        y = frame["label"].to_numpy(dtype=object)
        default = HistGradientBoostingClassifier(max_iter=15, random_state=0)
    else:
        y = X["income"].to_numpy() / 1000 + (X["city"] == "Rome").to_numpy() * 5.0
        default = HistGradientBoostingRegressor(max_iter=15, random_state=0)
    # Not `estimator or default`: an unfitted forest has no length to be truthy with.
    estimator = default if estimator is None else estimator
    pipeline = pipeline_build(feature_columns=FEATURES, estimator=estimator, scale_numeric=False)
    pipeline.fit(X.iloc[:100], y[:100])
    return pipeline, X.iloc[100:], y[100:]


def test_the_permutation_sample_is_bounded_sorted_and_the_same_for_a_seed(monkeypatch):
    monkeypatch.setattr(metrics, "PERMUTATION_MAX_ROWS", 50)
    first = metrics.permutation_sample_rows(1000, seed=3)
    assert len(first) == 50
    assert len(set(first.tolist())) == 50
    assert np.array_equal(first, np.sort(first))
    assert first.min() >= 0
    assert first.max() < 1000
    assert np.array_equal(first, metrics.permutation_sample_rows(1000, seed=3))
    assert not np.array_equal(first, metrics.permutation_sample_rows(1000, seed=4))
    # A holdout no larger than the bound is used whole.
    assert np.array_equal(metrics.permutation_sample_rows(50, seed=3), np.arange(50))
    assert np.array_equal(metrics.permutation_sample_rows(7, seed=3), np.arange(7))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_permutation_importance_records_its_sample_size_and_repeats(task, monkeypatch):
    pipeline, X_holdout, y_holdout = _fitted(task)
    monkeypatch.setattr(metrics, "PERMUTATION_MAX_ROWS", 60)

    importances = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=11
    )

    assert importances["method"] == "permutation"
    assert importances["sample_rows"] == 60
    assert importances["holdout_rows"] == len(X_holdout) == 160
    assert importances["n_repeats"] == metrics.PERMUTATION_REPEATS
    assert sorted(f["name"] for f in importances["features"]) == ["age", "city", "income"]


def test_a_holdout_smaller_than_the_bound_is_recorded_as_used_whole():
    pipeline, X_holdout, y_holdout = _fitted("regression")
    assert len(X_holdout) < metrics.PERMUTATION_MAX_ROWS

    importances = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=0
    )

    assert importances["sample_rows"] == importances["holdout_rows"] == len(X_holdout)


def test_the_bound_on_the_permutation_sample_is_at_most_the_documented_size():
    # The default keeps the importance cheap next to the fit; raising it must be a decision, not a slip.
    assert 0 < metrics.PERMUTATION_MAX_ROWS <= 2000
    assert 1 <= metrics.PERMUTATION_REPEATS <= 5


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_permutation_importance_is_the_same_for_the_same_seed_and_moves_with_the_seed(task, monkeypatch):
    pipeline, X_holdout, y_holdout = _fitted(task)
    monkeypatch.setattr(metrics, "PERMUTATION_MAX_ROWS", 80)

    def compute(seed: int) -> dict:
        return metrics.feature_importances_compute(
            pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=seed
        )

    assert compute(1) == compute(1)
    assert compute(1)["features"] != compute(2)["features"]


def test_native_importances_use_no_rows_and_record_no_sample():
    pipeline, X_holdout, y_holdout = _fitted(
        "classification", estimator=RandomForestClassifier(n_estimators=5, random_state=0)
    )

    importances = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_holdout, y_holdout=y_holdout, seed=0
    )

    assert importances["method"] == "native"
    assert set(importances) == {"method", "features"}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_stacking_shuffles_into_few_predict_calls_gives_the_scores_of_one_call_each(task, monkeypatch):
    pipeline, X_holdout, y_holdout = _fitted(task)
    transformed = pipeline[:-1].transform(X_holdout)
    groups = [np.array([0]), np.array([1]), np.arange(2, transformed.shape[1]), np.array([], dtype=int)]

    def importances(cells: int) -> np.ndarray:
        monkeypatch.setattr(metrics, "PERMUTATION_STACK_CELLS", cells)
        return metrics.grouped_permutation_importance(
            pipeline[-1], transformed, y_holdout, groups=groups, n_repeats=3, seed=9
        )

    one_block_per_call = importances(1)
    assert np.array_equal(importances(10**9), one_block_per_call)
    assert np.array_equal(importances(transformed.size * 4), one_block_per_call)
    assert one_block_per_call[3] == 0.0


def test_the_residuals_figure_is_the_one_plotly_makes_from_the_points():
    rng = np.random.default_rng(0)
    residuals = metrics.residuals_build(
        y_true=rng.normal(size=3000) * 50, y_pred=rng.normal(size=3000) * 50, seed=1
    )
    figure = go.Figure(
        go.Scatter(
            x=residuals["predicted"],
            y=residuals["residual"],
            mode="markers",
            marker={"size": 6, "opacity": 0.6},
            hovertemplate="predicted %{x:.4g}, residual %{y:.4g}<extra></extra>",
        )
    )
    figure.add_hline(y=0, line_dash="dash", line_color="grey")
    figure.update_layout(
        title=f"Residuals (holdout), {metrics.RESIDUALS_MAX_POINTS} of 3000 points",
        xaxis_title="Predicted",
        yaxis_title="Actual - predicted",
        height=holdout_figures.RESIDUALS_HEIGHT,
        margin=holdout_figures.FIGURE_MARGIN,
        title_font_size=holdout_figures.TITLE_FONT_SIZE,
        xaxis_automargin=True,
        yaxis_automargin=True,
    )

    assert holdout_figures.residuals_figure(residuals) == holdout_figures._figure_dict(figure)


def test_the_importance_figure_is_the_one_plotly_builds():
    importances = {
        "method": "native",
        "features": [{"name": "x2", "importance": 0.5}, {"name": "x1", "importance": 0.25}],
    }
    figure = go.Figure(go.Bar(x=[0.25, 0.5], y=["x1", "x2"], orientation="h"))
    figure.update_layout(
        title="Feature importance (native)",
        xaxis_title="Importance",
        yaxis_type="category",
        height=holdout_figures.importances_height(2),
        margin=holdout_figures.FIGURE_MARGIN,
        title_font_size=holdout_figures.TITLE_FONT_SIZE,
        yaxis_automargin=True,
    )

    assert holdout_figures.feature_importances_figure(importances) == holdout_figures._figure_dict(figure)


def test_the_importance_figure_title_names_the_permutation_sample():
    importances = {
        "method": "permutation",
        "sample_rows": 1000,
        "holdout_rows": 20000,
        "n_repeats": 1,
        "features": [{"name": "age", "importance": 0.2}],
    }
    title = holdout_figures.feature_importances_figure(importances)["layout"]["title"]["text"]
    assert title == "Feature importance (permutation, 1,000 of 20,000 holdout rows)"
    native = {"method": "native", "features": [{"name": "age", "importance": 0.2}]}
    native_title = holdout_figures.feature_importances_figure(native)["layout"]["title"]["text"]
    assert native_title == "Feature importance (native)"


def test_every_holdout_figure_has_a_readable_height_and_leaves_the_width_to_the_page():
    """Each figure keeps a plot area of at least 250 px (the residuals' was about 80 px), growing with the
    classes or bars it holds, within a bound; the page draws it at its container's width."""
    rng = np.random.default_rng(0)
    residuals = metrics.residuals_build(y_true=rng.normal(size=50), y_pred=rng.normal(size=50), seed=0)
    few = {"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}
    many = {"labels": [str(i) for i in range(40)], "matrix": [[1] * 40 for _ in range(40)]}
    bars = {"method": "native", "features": [{"name": f"x{i}", "importance": 1.0} for i in range(30)]}
    figures = [
        holdout_figures.residuals_figure(residuals),
        holdout_figures.confusion_matrix_figure(few),
        holdout_figures.confusion_matrix_figure(many),
        holdout_figures.feature_importances_figure(bars),
    ]

    for figure in figures:
        layout = figure["layout"]
        margin = layout["margin"]
        assert "width" not in layout, "the page sets the width from its container"
        assert layout["height"] - margin["t"] - margin["b"] >= 250
        assert layout["height"] <= 1200
    assert figures[2]["layout"]["height"] > figures[1]["layout"]["height"]
    assert figures[3]["layout"]["height"] >= 30 * holdout_figures.IMPORTANCE_ROW_PX
