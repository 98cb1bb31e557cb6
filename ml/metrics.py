"""Holdout metrics, confusion matrix, residuals and feature importances (their figures: ml.figures)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state

from ml.pipeline import input_column_of_outputs

# Permutation importance predicts its rows once per repeat and input column, so its cost is rows x repeats
# x columns predictions: 180,000 for 2,000 rows, 5 repeats and 18 columns, half the fit of a histogram
# gradient boosting model on 80,000 rows. It runs on a seeded sample of at most PERMUTATION_MAX_ROWS
# holdout rows with PERMUTATION_REPEATS shuffles, both recorded in the artifact ("sample_rows",
# "n_repeats"). Measured against permutation importance on a whole 20,000-row holdout with 10 shuffles
# (figures in bench/README.md), the estimate's error falls with more rows far more than with more shuffles
# of the same rows, so the budget goes to rows.
PERMUTATION_REPEATS = 1
PERMUTATION_MAX_ROWS = 1000
# Values (rows x columns) stacked into one predict call of permutation importance: 8 MB of float64.
PERMUTATION_STACK_CELLS = 1_000_000
# Residual plots with more points than this are unreadable and heavy to store; a seeded sample is kept.
RESIDUALS_MAX_POINTS = 2000


def _plain(values: Any) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values, dtype=object).tolist()]


def _codes(values: np.ndarray, labels: list) -> np.ndarray:
    """The position in `labels` of each value, every value being one of them."""
    codes = pd.Index(labels).get_indexer(values)
    if (codes < 0).any():
        raise ValueError(f"label(s) outside {labels!r}: {_plain(pd.unique(values[codes < 0]))!r}")
    return codes


def classification_metrics_compute(
    *, y_true: Any, y_pred: Any, proba: np.ndarray | None, classes: list
) -> tuple[dict[str, float], dict[str, str]]:
    """Holdout metrics as plain floats, and for each metric left out, the reason.

    ROC AUC is binary for two classes and one-vs-rest macro for more; it needs every class the model
    knows to appear in the holdout. Log loss needs probabilities and no holdout label unknown to the model.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    present = _plain(pd.unique(y_true))
    # scikit-learn's metrics find and sort the labels of text arrays again in every call. Integer codes
    # in the same sorted order give the same confusion matrices, so the same values, at a fraction of the
    # cost on a large holdout.
    labels = sorted(set(classes) | set(present) | set(_plain(pd.unique(y_pred))))
    true_codes, pred_codes = _codes(y_true, labels), _codes(y_pred, labels)
    values: dict[str, float] = {}
    omitted: dict[str, str] = {}
    with warnings.catch_warnings():
        # Balanced accuracy warns when a predicted class is absent from the holdout; the value is right.
        warnings.simplefilter("ignore", UserWarning)
        values["accuracy"] = float(skm.accuracy_score(true_codes, pred_codes))
        values["balanced_accuracy"] = float(skm.balanced_accuracy_score(true_codes, pred_codes))
        values["f1_macro"] = float(skm.f1_score(true_codes, pred_codes, average="macro", zero_division=0))
    if proba is None:
        reason = "the model gives no class probabilities"
        omitted["roc_auc"] = reason
        omitted["log_loss"] = reason
        return values, omitted
    known = set(classes)
    unknown = sorted({str(v) for v in present if v not in known})
    absent = [str(c) for c in classes if c not in set(present)]
    if unknown:
        reason = f"the holdout has label(s) the model never saw in training: {', '.join(unknown)}"
        omitted["roc_auc"] = reason
        omitted["log_loss"] = reason
        return values, omitted
    class_codes = np.array([labels.index(c) for c in classes])
    if absent:
        omitted["roc_auc"] = f"class(es) missing from the holdout: {', '.join(absent)}"
    elif len(classes) == 2:
        values["roc_auc"] = float(skm.roc_auc_score(true_codes == class_codes[1], proba[:, 1]))
    else:
        values["roc_auc"] = float(
            skm.roc_auc_score(true_codes, proba, multi_class="ovr", average="macro", labels=class_codes)
        )
    values["log_loss"] = float(skm.log_loss(true_codes, proba, labels=class_codes))
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
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    known = set(classes)
    labels = list(classes) + sorted({v for v in _plain(pd.unique(y_true)) if v not in known}, key=str)
    size = len(labels)
    cells = _codes(y_true, labels) * size + _codes(y_pred, labels)
    matrix = np.bincount(cells, minlength=size * size).reshape(size, size)
    return {"labels": labels, "matrix": matrix.tolist()}


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
    *,
    pipeline: Pipeline,
    X_holdout: pd.DataFrame,
    y_holdout: Any,
    seed: int,
    X_transformed: np.ndarray | None = None,
) -> dict[str, Any]:
    """Importance per input column, most important first.

    Trees give feature_importances_; linear models give coefficients, whose absolute values are
    comparable because numeric inputs are standardised. One-hot outputs are summed back to their column.
    Models with neither (histogram gradient boosting) get permutation importance on a seeded sample of at
    most PERMUTATION_MAX_ROWS holdout rows (permutation_sample_rows), with PERMUTATION_REPEATS shuffles;
    the result records "sample_rows", "holdout_rows" and "n_repeats". `X_transformed`, the
    preprocessing's output for X_holdout, saves transforming the holdout again when the caller has it.
    """
    model = pipeline[-1]
    inputs = list(X_holdout.columns)
    native = getattr(model, "feature_importances_", None)
    method = "native"
    # What permutation importance ran on; native importances and coefficients use no rows.
    sample: dict[str, int] = {}
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
        y = np.asarray(y_holdout)
        keep = permutation_sample_rows(len(X_holdout), seed=seed)
        sample = {"sample_rows": len(keep), "holdout_rows": len(X_holdout), "n_repeats": PERMUTATION_REPEATS}
        if X_transformed is None:
            transformed = pipeline[:-1].transform(X_holdout.iloc[keep])
        else:
            transformed = np.asarray(X_transformed)[keep]
        owners = np.asarray(input_column_of_outputs(pipeline), dtype=object)
        groups = [np.flatnonzero(owners == name) for name in inputs]
        means = grouped_permutation_importance(
            model, transformed, y[keep], groups=groups, n_repeats=PERMUTATION_REPEATS, seed=seed
        )
        scores = {name: float(value) for name, value in zip(inputs, means, strict=True)}
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    features = [{"name": name, "importance": value} for name, value in ranked]
    return {"method": method, **sample, "features": features}


def permutation_sample_rows(n_rows: int, *, seed: int) -> np.ndarray:
    """Positions of the holdout rows permutation importance uses: all, or a seeded sorted sample."""
    if n_rows <= PERMUTATION_MAX_ROWS:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, PERMUTATION_MAX_ROWS, replace=False))


def grouped_permutation_importance(
    model: Any, X: np.ndarray, y: np.ndarray, *, groups: list[np.ndarray], n_repeats: int, seed: int
) -> np.ndarray:
    """Mean score drop when the columns of each group are shuffled together, for a model fed matrix X.

    With X the output of row-wise preprocessing (imputers, scalers and one-hot encoders transform each
    row on its own), shuffling the rows of one input column before preprocessing equals shuffling the
    rows of the group of columns made from it afterwards. Shuffles and scores are scikit-learn's
    permutation_importance's (same random state use, the estimator's own score), so the result equals
    permutation_importance on the whole pipeline, without preprocessing the holdout once per shuffle.
    """
    X = np.asarray(X)
    n_rows = X.shape[0]
    # permutation_importance draws one seed, then every column replays the same shuffles from it; each
    # shuffle applies to the already shuffled column, so repeat r uses the composition of shuffles 1..r.
    shuffler = check_random_state(check_random_state(seed).randint(np.iinfo(np.int32).max + 1))
    step = np.arange(n_rows)
    order = np.arange(n_rows)
    orders = []
    for _ in range(n_repeats):
        shuffler.shuffle(step)
        order = order[step]
        orders.append(order)
    score_rows = _score_of_predictions(model)
    if score_rows is skm.accuracy_score:
        # Accuracy compares labels; as positions in classes_ (-1 for labels the model never predicts) it
        # is the same number, without scikit-learn sorting the text labels again for every shuffle.
        classes = pd.Index(model.classes_)
        y = classes.get_indexer(y)

        def predict(rows: np.ndarray) -> np.ndarray:
            return classes.get_indexer(model.predict(rows))

    else:
        predict = model.predict
    drops = np.zeros((len(groups), n_repeats))
    if score_rows is None:
        baseline = model.score(X, y)
        for position, columns in enumerate(groups):
            for repeat, shuffled in enumerate(orders):
                if len(columns):
                    drops[position, repeat] = baseline - model.score(_shuffled(X, columns, shuffled), y)
        return np.mean(drops, axis=1)
    # Predictions are row by row, so the unshuffled rows and every shuffle of every group can be stacked
    # into few predict calls: the same predictions as one call each, without the per-call overhead (a
    # quarter of the time for 1,000 rows). Blocks are stacked up to PERMUTATION_STACK_CELLS values at once.
    blocks: list[tuple[int, int, np.ndarray | None, np.ndarray | None]] = [(-1, -1, None, None)]
    blocks += [
        (position, repeat, columns, shuffled)
        for position, columns in enumerate(groups)
        if len(columns)
        for repeat, shuffled in enumerate(orders)
    ]
    per_call = max(1, PERMUTATION_STACK_CELLS // max(1, X.size))
    baseline = 0.0
    for start in range(0, len(blocks), per_call):
        chunk = blocks[start : start + per_call]
        stacked = np.tile(X, (len(chunk), 1))
        for index, (_, _, columns, shuffled) in enumerate(chunk):
            if columns is not None:
                stacked[index * n_rows : (index + 1) * n_rows, columns] = X[np.ix_(shuffled, columns)]
        predicted = predict(stacked)
        for index, (position, repeat, _, _) in enumerate(chunk):
            score = score_rows(y, predicted[index * n_rows : (index + 1) * n_rows])
            if position < 0:
                baseline = score
            else:
                drops[position, repeat] = baseline - score
    return np.mean(drops, axis=1)


def _shuffled(X: np.ndarray, columns: np.ndarray, order: np.ndarray) -> np.ndarray:
    """X with the rows of `columns` taken in `order`, the other columns as they are."""
    rows = X.copy()
    rows[:, columns] = X[np.ix_(order, columns)]
    return rows


def _score_of_predictions(model: Any) -> Any:
    """The metric behind model.score when it is scikit-learn's default, else None (call model.score)."""
    score = getattr(type(model), "score", None)
    if score is ClassifierMixin.score:
        return skm.accuracy_score
    if score is RegressorMixin.score:
        return skm.r2_score
    return None
