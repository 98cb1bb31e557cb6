"""Holdout metrics, confusion matrix, residuals and feature importances, with plotly figure builders."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn import metrics as skm
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from models_registry.training.pipeline import input_column_of_outputs

PERMUTATION_REPEATS = 5
# Permutation importance predicts the holdout repeats x features times; a sample keeps that bounded.
PERMUTATION_MAX_ROWS = 2000
# Residual plots with more points than this are unreadable and heavy to store; a seeded sample is kept.
RESIDUALS_MAX_POINTS = 2000
FIGURE_TEMPLATE = "plotly_white"


def _plain(values: Any) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values, dtype=object).tolist()]


def classification_metrics_compute(
    *, y_true: Any, y_pred: Any, proba: np.ndarray | None, classes: list
) -> tuple[dict[str, float], dict[str, str]]:
    """Holdout metrics as plain floats, and for each metric left out, the reason.

    ROC AUC is binary for two classes and one-vs-rest macro for more; it needs every class the model
    knows to appear in the holdout. Log loss needs probabilities and no holdout label unknown to the model.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    true_labels = _plain(y_true)
    values: dict[str, float] = {}
    omitted: dict[str, str] = {}
    with warnings.catch_warnings():
        # Balanced accuracy warns when a predicted class is absent from the holdout; the value is right.
        warnings.simplefilter("ignore", UserWarning)
        values["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
        values["balanced_accuracy"] = float(skm.balanced_accuracy_score(y_true, y_pred))
        values["f1_macro"] = float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    if proba is None:
        reason = "the model gives no class probabilities"
        omitted["roc_auc"] = reason
        omitted["log_loss"] = reason
        return values, omitted
    known = set(classes)
    unknown = sorted({str(v) for v in true_labels if v not in known})
    absent = [str(c) for c in classes if c not in set(true_labels)]
    if unknown:
        reason = f"the holdout has label(s) the model never saw in training: {', '.join(unknown)}"
        omitted["roc_auc"] = reason
        omitted["log_loss"] = reason
        return values, omitted
    if absent:
        omitted["roc_auc"] = f"class(es) missing from the holdout: {', '.join(absent)}"
    elif len(classes) == 2:
        positive = classes[1]
        values["roc_auc"] = float(
            skm.roc_auc_score(np.array([v == positive for v in true_labels]), proba[:, 1])
        )
    else:
        values["roc_auc"] = float(
            skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=np.asarray(classes))
        )
    values["log_loss"] = float(skm.log_loss(y_true, proba, labels=np.asarray(classes)))
    return values, omitted


def regression_metrics_compute(*, y_true: Any, y_pred: Any) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def confusion_matrix_build(*, y_true: Any, y_pred: Any, classes: list) -> dict[str, Any]:
    """Rows are true labels, columns predicted labels; holdout labels the model never saw are appended."""
    y_true = _plain(y_true)
    y_pred = _plain(y_pred)
    labels = list(classes) + sorted({v for v in y_true if v not in set(classes)}, key=str)
    index = {label: position for position, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, guess in zip(y_true, y_pred, strict=True):
        matrix[index[truth]][index[guess]] += 1
    return {"labels": labels, "matrix": matrix}


def residuals_build(*, y_true: Any, y_pred: Any, seed: int) -> dict[str, Any]:
    actual = np.asarray(y_true, dtype=float)
    predicted = np.asarray(y_pred, dtype=float)
    total = int(actual.size)
    if total > RESIDUALS_MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(total, RESIDUALS_MAX_POINTS, replace=False))
        actual, predicted = actual[keep], predicted[keep]
    return {
        "actual": actual.tolist(),
        "predicted": predicted.tolist(),
        "residual": (actual - predicted).tolist(),
        "n_points": int(actual.size),
        "n_total": total,
    }


def feature_importances_compute(
    *, pipeline: Pipeline, X_holdout: pd.DataFrame, y_holdout: Any, seed: int
) -> dict[str, Any]:
    """Importance per input column, most important first.

    Trees give feature_importances_; linear models give coefficients, whose absolute values are
    comparable because numeric inputs are standardised. One-hot outputs are summed back to their column.
    Models with neither (histogram gradient boosting) get permutation importance on the holdout.
    """
    model = pipeline.named_steps["model"]
    inputs = list(X_holdout.columns)
    native = getattr(model, "feature_importances_", None)
    method = "native"
    if native is None and getattr(model, "coef_", None) is not None:
        native = np.abs(np.atleast_2d(model.coef_)).sum(axis=0)
        method = "coefficients"
    if native is not None:
        owners = input_column_of_outputs(pipeline)
        scores = dict.fromkeys(inputs, 0.0)
        for owner, value in zip(owners, np.asarray(native, dtype=float), strict=True):
            scores[owner] += float(abs(value))
    else:
        method = "permutation"
        X, y = X_holdout, np.asarray(y_holdout)
        if len(X) > PERMUTATION_MAX_ROWS:
            keep = np.sort(np.random.default_rng(seed).choice(len(X), PERMUTATION_MAX_ROWS, replace=False))
            X, y = X.iloc[keep], y[keep]
        result = permutation_importance(pipeline, X, y, n_repeats=PERMUTATION_REPEATS, random_state=seed)
        scores = {name: float(value) for name, value in zip(inputs, result.importances_mean, strict=True)}
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return {"method": method, "features": [{"name": name, "importance": value} for name, value in ranked]}


def _figure_dict(figure: go.Figure) -> dict[str, Any]:
    # Through JSON so the result holds only plain lists and numbers, ready for a JSONField or a template.
    return json.loads(figure.to_json())


def confusion_matrix_figure(confusion: dict[str, Any]) -> dict[str, Any]:
    labels = [str(label) for label in confusion["labels"]]
    figure = go.Figure(
        go.Heatmap(
            z=confusion["matrix"],
            x=labels,
            y=labels,
            text=confusion["matrix"],
            texttemplate="%{text}",
            colorscale="Blues",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Confusion matrix (holdout)",
        xaxis_title="Predicted",
        yaxis_title="True",
        yaxis_autorange="reversed",
        xaxis_type="category",
        yaxis_type="category",
        template=FIGURE_TEMPLATE,
    )
    return _figure_dict(figure)


def residuals_figure(residuals: dict[str, Any]) -> dict[str, Any]:
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
    title = "Residuals (holdout)"
    if residuals["n_points"] < residuals["n_total"]:
        title += f", {residuals['n_points']} of {residuals['n_total']} points"
    figure.update_layout(
        title=title, xaxis_title="Predicted", yaxis_title="Actual - predicted", template=FIGURE_TEMPLATE
    )
    return _figure_dict(figure)


def feature_importances_figure(importances: dict[str, Any]) -> dict[str, Any]:
    features = list(reversed(importances["features"]))
    figure = go.Figure(
        go.Bar(
            x=[f["importance"] for f in features],
            y=[f["name"] for f in features],
            orientation="h",
        )
    )
    figure.update_layout(
        title=f"Feature importance ({importances['method']})",
        xaxis_title="Importance",
        yaxis_type="category",
        template=FIGURE_TEMPLATE,
    )
    return _figure_dict(figure)
