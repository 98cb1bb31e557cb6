"""Tests for what the training run does to stay fast: same files and figures, samples bounded and recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from ml import artifacts, metrics, onnx_export, onnx_trees
from ml.pipeline import feature_schema_build, frame_prepare, pipeline_build
from mlops_site import storage
from models_registry import mlflow_gateway
from models_registry.tests import mlflow_helpers
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload, run_train, version_of

COLUMNS = [
    {"name": "a", "kind": "numeric"},
    {"name": "b", "kind": "numeric"},
    {"name": "c", "kind": "categorical"},
]


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.normal(size=rows) * 1e3, "c": rng.choice(["x", "y", "z"], rows)}
    )
    frame.loc[rng.random(rows) < 0.05, "a"] = np.nan
    return frame_prepare(frame, COLUMNS)


def _forest_case(kind: str, rows: int = 600, boosting: bool = False):
    X = _frame(rows)
    signal = X["a"].fillna(0).to_numpy() + X["b"].to_numpy() / 1e3
    classifier = HistGradientBoostingClassifier if boosting else RandomForestClassifier
    size = {"max_iter": 8} if boosting else {"n_estimators": 5}
    if kind == "binary":
        classes = ["no", "yes"]
        y = np.where(signal > 0, "yes", "no").astype(object)
    elif kind == "multiclass":
        classes = ["p", "q", "r"]
        y = np.array(classes, dtype=object)[(signal > 0).astype(int) + (X["c"] == "x").to_numpy().astype(int)]
    elif kind == "integer classes":
        classes = [0, 3]
        y = (signal > 0).astype(int) * 3
    else:
        classes = None
        y = X["b"].to_numpy() / 7 + (X["c"] == "y").to_numpy() * 3.0
    if classes is None:
        estimator = (HistGradientBoostingRegressor if boosting else RandomForestRegressor)(
            random_state=0, **size
        )
    else:
        estimator = classifier(random_state=0, **size)
    pipeline = pipeline_build(feature_columns=COLUMNS, estimator=estimator, scale_numeric=False).fit(X, y)
    return {
        "pipeline": pipeline,
        "feature_schema": feature_schema_build(X, COLUMNS),
        "X_holdout": X,
        "classes": classes,
    }


@pytest.mark.parametrize("boosting", [False, True], ids=["random forest", "gradient boosting"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "integer classes", "regression"])
def test_the_ensemble_filled_from_its_arrays_is_the_file_skl2onnx_writes(kind, boosting, monkeypatch):
    case = _forest_case(kind, boosting=boosting)
    fills = []
    fill = onnx_trees._ensemble_fill
    monkeypatch.setattr(onnx_trees, "_ensemble_fill", lambda *a: fills.append(1) or fill(*a))

    fast = onnx_export.onnx_convert(**case)
    assert fills == [1], "the forest was not filled from its arrays"
    monkeypatch.setattr(onnx_trees, "_FORESTS", ())
    monkeypatch.setattr(onnx_trees, "_BOOSTING", ())
    plain = onnx_export.onnx_convert(**case)

    assert fills == [1]
    assert fast.available, fast.reason
    assert fast.data == plain.data
    assert fast == plain


@pytest.mark.parametrize("boosting", [False, True], ids=["random forest", "gradient boosting"])
def test_an_ensemble_whose_first_tree_skl2onnx_writes_otherwise_takes_skl2onnx_s_path(boosting, monkeypatch):
    case = _forest_case("regression", boosting=boosting)
    name = "_boosting_attributes" if boosting else "_forest_attributes"
    expected = onnx_export.onnx_convert(**case)
    attributes = getattr(onnx_trees, name)

    def other_thresholds(trees, *, classifier):
        values = attributes(trees, classifier=classifier)
        values["nodes_values"] = values["nodes_values"] + np.float32(1.0)
        return values

    monkeypatch.setattr(onnx_trees, name, other_thresholds)
    fills = []
    monkeypatch.setattr(onnx_trees, "_ensemble_fill", lambda *a: fills.append(1))

    conversion = onnx_export.onnx_convert(**case)

    assert fills == []
    assert conversion == expected


def test_the_onnx_check_runs_on_a_bounded_seeded_sample_and_records_its_size(monkeypatch):
    case = _forest_case("binary", rows=900)
    monkeypatch.setattr(onnx_export, "CHECK_MAX_ROWS", 250)
    scored = []
    predict = onnx_export.OnnxPredictor.predict_columns

    def counted(self, columns):
        scored.append(len(next(iter(columns.values()))))
        return predict(self, columns)

    monkeypatch.setattr(onnx_export.OnnxPredictor, "predict_columns", counted)

    conversion = onnx_export.onnx_convert(**case, seed=4)

    assert conversion.available, conversion.reason
    assert conversion.checked_rows == 250
    assert scored == [250]
    rows = onnx_export.check_rows(900, seed=4)
    assert len(rows) == 250
    assert np.array_equal(rows, np.sort(rows))
    assert np.array_equal(rows, onnx_export.check_rows(900, seed=4))
    assert not np.array_equal(rows, onnx_export.check_rows(900, seed=5))
    assert np.array_equal(onnx_export.check_rows(200, seed=4), np.arange(200))
    # The same seed checks the same rows, so the same maximum difference is recorded.
    assert onnx_export.onnx_convert(**case, seed=4) == conversion


def test_the_onnx_check_compares_the_sampled_rows_with_scikit_learn_s_predictions_of_those_rows(monkeypatch):
    case = _forest_case("binary", rows=900)
    monkeypatch.setattr(onnx_export, "CHECK_MAX_ROWS", 250)
    pipeline, X = case["pipeline"], case["X_holdout"]
    predictions = np.asarray(pipeline.predict(X), dtype=object)
    probabilities = pipeline.predict_proba(X)
    rows = onnx_export.check_rows(len(X), seed=4)

    wrong = predictions.copy()
    wrong[rows[0]] = "no" if wrong[rows[0]] == "yes" else "yes"
    refused = onnx_export.onnx_convert(
        **case, sklearn_predictions=wrong, sklearn_probabilities=probabilities, seed=4
    )
    unchecked = np.setdiff1d(np.arange(len(X)), rows)[0]
    elsewhere = predictions.copy()
    elsewhere[unchecked] = "no" if elsewhere[unchecked] == "yes" else "yes"
    kept = onnx_export.onnx_convert(
        **case, sklearn_predictions=elsewhere, sklearn_probabilities=probabilities, seed=4
    )

    assert refused.reason == "ONNX labels differ from scikit-learn on 1 of 250 holdout rows."
    assert kept.available


@pytest.mark.django_db
def test_a_run_records_the_importance_sample_and_the_onnx_check_rows_and_logs_its_own_skops_file(
    staff, monkeypatch
):
    monkeypatch.setattr(metrics, "PERMUTATION_MAX_ROWS", 30)
    monkeypatch.setattr(onnx_export, "CHECK_MAX_ROWS", 25)
    cancer = dataset_upload(cancer_frame(), name="cancer", target="diagnosis", user=staff)

    run = run_train(cancer, algorithm="hist_gradient_boosting", params={"max_iter": 20}, user=staff, seed=7)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    version = version_of(run)
    importances = version.artifacts["feature_importances"]
    assert importances["method"] == "permutation"
    assert importances["sample_rows"] == 30
    assert importances["holdout_rows"] == version.training_summary["split"]["n_test"] == 40
    assert importances["n_repeats"] == metrics.PERMUTATION_REPEATS
    assert version.training_summary["onnx_checked_rows"] == 25
    assert version.onnx_status == "available"
    # MLflow holds the very file the site stored, not a second serialisation of the model.
    stored = storage.read_bytes(version.skops_key)
    logged = mlflow_helpers.client().get_logged_model(mlflow_helpers.run_read(run.mlflow_run_id).model_id)
    mlflow_file = Path(logged.artifact_location.removeprefix("file://")) / "model.skops"
    assert mlflow_file.read_bytes() == stored
    served = mlflow_helpers.registered_model_read(
        name="cancer", version=version.mlflow_version, trusted=list(artifacts.TRUSTED_TYPES)
    )
    assert type(served[-1]).__name__ == "HistGradientBoostingClassifier"


@pytest.mark.django_db
def test_a_given_skops_file_with_a_type_mlflow_is_not_told_to_trust_is_refused():
    X = _frame(80)
    y = np.where(X["b"] > 0, "yes", "no").astype(object)
    model = pipeline_build(
        feature_columns=COLUMNS, estimator=HistGradientBoostingClassifier(max_iter=5), scale_numeric=False
    ).fit(X, y)

    with pytest.raises(mlflow_gateway.RegistryError, match="untrusted types"):
        mlflow_gateway.training_run_log(
            run_key="untrusted-1",
            params={},
            metrics={},
            tags={},
            artifacts={},
            model=model,
            model_skops=artifacts.skops_dump(model),
            skops_trusted_types=(),
        )
