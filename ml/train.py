"""Train one catalogue algorithm on a DataFrame: checks, seeded split, fit, holdout metrics, artifacts.

The forms, serializers and services of every process import this module for its limits (MAX_SEED,
TEST_SIZE_MIN, TEST_SIZE_MAX), and ml.holdout for HoldoutPlan, so scikit-learn and ml.metrics are imported
in the functions that train or split: a web or Celery worker starts without them and loads them on its
first training. The split itself (sizes, seeded split, a retraining's plan) is in ml.holdout.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ml import catalogue, drift, figures
from ml.errors import TrainingInputError
from ml.features import (
    NUMERIC,
    distinct_values_keep_types,
    feature_columns_select,
    feature_schema_build,
    frame_prepare,
)
from ml.holdout import (
    MIN_TEST_ROWS,
    MIN_TRAIN_ROWS,
    HoldoutPlan,
    holdout_fingerprint,
    minimum_rows,
    plan_split,
    seeded_test_index,
    split_sizes,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

MAX_SEED = 2**32 - 1
# The holdout share a training run may ask for, the same on the page, in the API and in the admin: below 5%
# the holdout metrics are noise, above half the model is trained on less than it is judged on.
TEST_SIZE_MIN = 0.05
TEST_SIZE_MAX = 0.5


@dataclass
class TrainingResult:
    pipeline: Pipeline
    task: str
    algorithm: str
    params: dict[str, Any]
    seed: int
    test_size: float
    metrics: dict[str, float]
    metrics_omitted: dict[str, str]
    artifacts: dict[str, Any]
    feature_schema: list[dict[str, Any]]
    excluded_columns: list[dict[str, str]]
    classes: list[Any] | None
    X_holdout: pd.DataFrame
    y_holdout: pd.Series
    n_train: int
    n_test: int
    n_dropped_missing_target: int
    stratified: bool
    holdout_sha256: str
    fit_seconds: float
    warnings: list[str] = field(default_factory=list)
    # scikit-learn's predictions on X_holdout (and class probabilities), for checks such as the ONNX one.
    holdout_predictions: np.ndarray | None = None
    holdout_probabilities: np.ndarray | None = None
    # The training rows binned per feature and the holdout's outputs, for drift checks (ml.drift).
    reference_profile: dict[str, Any] | None = None

    @property
    def split(self) -> dict[str, Any]:
        """What to record so the split can be checked and repeated."""
        return {
            "seed": self.seed,
            "test_size": self.test_size,
            "stratified": self.stratified,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_dropped_missing_target": self.n_dropped_missing_target,
            "holdout_sha256": self.holdout_sha256,
        }


def _target_prepare(y: pd.Series, *, task: str, target_column: str) -> pd.Series:
    """Class labels as int or text (they round-trip through JSON and ONNX as they are); floats otherwise."""
    if task == catalogue.REGRESSION:
        if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
            examples = ", ".join(repr(v) for v in y.drop_duplicates().head(3).tolist())
            raise TrainingInputError(
                f"Regression needs a numeric target, but '{target_column}' holds values like {examples}. "
                "Choose classification instead."
            )
        values = y.astype("float64")
        if not np.isfinite(values.to_numpy()).all():
            raise TrainingInputError(
                f"The target '{target_column}' holds infinite values; regression needs finite numbers."
            )
        return values
    if pd.api.types.is_bool_dtype(y):
        return y.map(lambda v: "True" if v else "False").astype(object)
    if pd.api.types.is_numeric_dtype(y):
        numbers = y.to_numpy(dtype="float64")
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        if not whole.all():
            example = numbers[~whole][0]
            raise TrainingInputError(
                f"Classification needs class labels, but '{target_column}' holds fractional numbers "
                f"like {example:g}. Choose regression instead."
            )
        return pd.Series(numbers.astype("int64"), index=y.index, name=y.name)
    if distinct_values_keep_types(y):
        # str() once per distinct label rather than once per row.
        codes, uniques = pd.factorize(y)
        if (codes >= 0).all():
            texts = np.array([str(v) for v in uniques.tolist()], dtype=object)
            return pd.Series(texts[codes], index=y.index, name=y.name, dtype=object)
    return y.map(str).astype(object)


def _fit(
    pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, *, label: str, weights: np.ndarray | None = None
) -> tuple[float, list[str]]:
    from sklearn.utils.validation import has_fit_parameter

    from ml.imputation import simple_imputers_restore

    started = time.perf_counter()
    fit_params: dict[str, Any] = {}
    if weights is not None:
        if has_fit_parameter(pipeline[-1], "sample_weight"):
            fit_params["model__sample_weight"] = weights
        else:
            # An estimator without weights (nearest neighbours) sees each row as many times as its weight.
            repeats = np.maximum(1, np.rint(weights)).astype(int)
            X, y = (
                X.iloc[np.repeat(np.arange(len(X)), repeats)],
                y.iloc[np.repeat(np.arange(len(y)), repeats)],
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline.fit(X, y, **fit_params)
        except ValueError as exc:
            raise TrainingInputError(f"{label} could not be trained with these settings: {exc}") from exc
    # The model's files then name only scikit-learn's classes (see ml.imputation).
    simple_imputers_restore(pipeline)
    return time.perf_counter() - started, sorted({f"{w.category.__name__}: {w.message}" for w in caught})


@dataclass
class _Evaluation:
    metrics: dict[str, float]
    omitted: dict[str, str]
    artifacts: dict[str, Any]
    classes: list[Any] | None
    predictions: np.ndarray
    probabilities: np.ndarray | None


def _evaluate(
    pipeline: Pipeline, X_test: pd.DataFrame, y_test: pd.Series, *, task: str, seed: int
) -> _Evaluation:
    from ml import metrics

    # Pipeline.predict and predict_proba would each preprocess the holdout again; the fitted model fed the
    # preprocessing's output once is exactly what they compute.
    transformed = pipeline[:-1].transform(X_test)
    model = pipeline[-1]
    predicted = model.predict(transformed)
    proba: np.ndarray | None = None
    artifacts: dict[str, Any] = {"figures": {}}
    classes: list[Any] | None = None
    if task == catalogue.CLASSIFICATION:
        classes = np.asarray(pipeline.classes_).tolist()
        proba = model.predict_proba(transformed) if hasattr(pipeline, "predict_proba") else None
        values, omitted = metrics.classification_metrics_compute(
            y_true=y_test, y_pred=predicted, proba=proba, classes=classes
        )
        confusion = metrics.confusion_matrix_build(y_true=y_test, y_pred=predicted, classes=classes)
        artifacts["confusion_matrix"] = confusion
        artifacts["figures"]["confusion_matrix"] = figures.confusion_matrix_figure(confusion)
    else:
        values, omitted = metrics.regression_metrics_compute(y_true=y_test, y_pred=predicted), {}
        residuals = metrics.residuals_build(y_true=y_test, y_pred=predicted, seed=seed)
        artifacts["residuals"] = residuals
        artifacts["figures"]["residuals"] = figures.residuals_figure(residuals)
    importances = metrics.feature_importances_compute(
        pipeline=pipeline, X_holdout=X_test, y_holdout=y_test, seed=seed, X_transformed=transformed
    )
    artifacts["feature_importances"] = importances
    artifacts["figures"]["feature_importances"] = figures.feature_importances_figure(importances)
    return _Evaluation(values, omitted, artifacts, classes, predicted, proba)


def seeded_holdout_rows(
    frame: pd.DataFrame, *, target_column: str, task: str, seed: int, test_size: float
) -> np.ndarray:
    """Positions in `frame` of the rows model_train holds out for this seed and size (sorted)."""
    y = frame[target_column].reset_index(drop=True)
    y = _target_prepare(y.loc[y.notna()], task=task, target_column=target_column)
    counts = y.value_counts() if task == catalogue.CLASSIFICATION else None
    test, _ = seeded_test_index(y, counts, test_size=test_size, seed=seed)
    return np.sort(test.to_numpy())


def model_train(
    *,
    frame: pd.DataFrame,
    schema_columns: list[dict[str, Any]],
    target_column: str,
    algorithm: str,
    params: dict[str, Any] | None = None,
    task: str | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    threads: int = 1,
    holdout_plan: HoldoutPlan | None = None,
) -> TrainingResult:
    """Train and evaluate; every problem with the inputs raises TrainingInputError with a readable reason.

    Rows whose target is missing are dropped and counted. The holdout is train_test_split with
    random_state=seed, stratified by class when every class has at least two rows and both parts can
    hold one row of each class. The same inputs and seed give the same split and the same predictions.
    A `holdout_plan` (a retraining's) replaces that split and weighs recent rows (see HoldoutPlan).
    Native thread pools (OpenMP, BLAS) are capped at `threads` for the run: on a shared worker, spinning
    OpenMP threads of histogram gradient boosting made training many times slower, not faster.
    """
    from sklearn.model_selection import train_test_split

    from ml.pipeline import pipeline_build

    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise TrainingInputError("The dataset has no rows.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise TrainingInputError(f"The seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")
    if isinstance(test_size, bool) or not isinstance(test_size, int | float) or not 0 < test_size < 1:
        raise TrainingInputError(
            f"The holdout fraction must be between 0 and 1 (for example 0.2); got {test_size!r}."
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise TrainingInputError(f"The thread count must be a whole number of at least 1; got {threads!r}.")
    if target_column not in frame.columns:
        raise TrainingInputError(
            f"The target column '{target_column}' is not in the dataset. "
            f"Columns: {', '.join(map(str, frame.columns))}."
        )
    features, excluded = feature_columns_select(schema_columns=schema_columns, target_column=target_column)
    if not features:
        raise TrainingInputError(
            f"There are no numeric or categorical columns besides the target '{target_column}' to train on."
        )

    # Positions in the given frame, so the recorded holdout does not depend on the caller's index.
    frame = frame.reset_index(drop=True)
    target = frame[target_column]
    present = target.notna()
    n_dropped = int((~present).sum())
    if not present.any():
        raise TrainingInputError(f"The target column '{target_column}' has no values.")
    frame = frame.loc[present]
    target = target.loc[present]

    if task is None:
        task = catalogue.task_infer(target)
    elif task not in catalogue.TASKS:
        raise TrainingInputError(f"Unknown task '{task}'. Choose one of: {', '.join(catalogue.TASKS)}.")
    spec = catalogue.algorithm_get(algorithm=algorithm, task=task)
    estimator = catalogue.estimator_build(algorithm=algorithm, task=task, params=params, seed=seed)
    full_params = {k: v for k, v in estimator.get_params(deep=False).items() if k != "random_state"}

    y = _target_prepare(target, task=task, target_column=target_column)
    counts = y.value_counts() if task == catalogue.CLASSIFICATION else None
    if counts is not None and len(counts) < 2:
        raise TrainingInputError(
            f"The target '{target_column}' has only one class ({counts.index[0]!r}); "
            "classification needs at least two."
        )

    n_rows = len(y)
    n_train, n_test = split_sizes(n_rows, test_size)
    if n_train < MIN_TRAIN_ROWS or n_test < MIN_TEST_ROWS:
        dropped = f" after dropping {n_dropped} without a target" if n_dropped else ""
        raise TrainingInputError(
            f"Too few rows: {n_rows} usable{dropped}. A {test_size:.0%} holdout needs at least "
            f"{minimum_rows(test_size)} rows ({MIN_TRAIN_ROWS} to train, {MIN_TEST_ROWS} to test)."
        )

    X = frame_prepare(frame, features)
    empty = [c["name"] for c in features if c["kind"] == NUMERIC and X[c["name"]].isna().all()]
    if empty:
        features = [c for c in features if c["name"] not in empty]
        excluded += [{"name": name, "reason": "the column has no numeric values"} for name in empty]
        if not features:
            raise TrainingInputError("Every feature column is empty; there is nothing to train on.")
        X = X[[c["name"] for c in features]]

    weights: np.ndarray | None = None
    if holdout_plan is None:
        stratified = bool(
            counts is not None and counts.min() >= 2 and n_test >= len(counts) and n_train >= len(counts)
        )
        # Class codes in the labels' sorted order give the stratified splitter the same classes and counts
        # as the labels themselves, so the same split, without it sorting every text label. The split
        # depends only on the row count, the seed and the strata: seeded_test_index finds the same rows.
        strata = pd.factorize(y, sort=True)[0] if stratified else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=n_test, random_state=seed, stratify=strata
        )
    else:
        test_index, weights = plan_split(y, len(frame) + n_dropped, holdout_plan)
        train_index = y.index.difference(test_index)
        stratified = False
        if len(train_index) < MIN_TRAIN_ROWS or len(test_index) < MIN_TEST_ROWS:
            raise TrainingInputError("Too few rows to train and judge a challenger under the holdout plan.")
        X_train, X_test = X.loc[train_index], X.loc[test_index]
        y_train, y_test = y.loc[train_index], y.loc[test_index]
    if counts is not None and y_train.nunique() < 2:
        raise TrainingInputError(
            "The training part of the split holds only one class; add rows or lower the holdout fraction."
        )

    pipeline = pipeline_build(feature_columns=features, estimator=estimator, scale_numeric=spec.scale_numeric)
    with threadpool_limits(limits=threads):
        fit_seconds, fit_warnings = _fit(pipeline, X_train, y_train, label=spec.label, weights=weights)
        evaluation = _evaluate(pipeline, X_test, y_test, task=task, seed=seed)

    return TrainingResult(
        pipeline=pipeline,
        task=task,
        algorithm=algorithm,
        params=full_params,
        seed=seed,
        test_size=float(test_size),
        metrics=evaluation.metrics,
        metrics_omitted=evaluation.omitted,
        artifacts=evaluation.artifacts,
        feature_schema=feature_schema_build(X_train, features),
        excluded_columns=excluded,
        classes=evaluation.classes,
        X_holdout=X_test,
        y_holdout=y_test,
        n_train=len(X_train),
        n_test=len(X_test),
        n_dropped_missing_target=n_dropped,
        stratified=stratified,
        holdout_sha256=holdout_fingerprint(X_test.index),
        fit_seconds=fit_seconds,
        warnings=fit_warnings,
        holdout_predictions=evaluation.predictions,
        holdout_probabilities=evaluation.probabilities,
        reference_profile=drift.reference_profile_build(
            X_train=X_train,
            feature_schema=features,
            task=task,
            classes=evaluation.classes,
            holdout_predictions=evaluation.predictions,
            holdout_probabilities=evaluation.probabilities,
            y_holdout=y_test,
        ),
    )
