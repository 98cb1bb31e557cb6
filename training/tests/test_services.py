"""Tests for the training service: end to end with real MLflow and storage, bad input, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from datasets.models import DatasetVersion
from ml import artifacts, predictor
from ml.pipeline import columns_from_frame
from mlops_site import storage
from models_registry.models import ModelVersion, RegisteredModel
from models_registry.tests import mlflow_helpers
from training import services as training_services
from training.models import TrainingRun
from training.tests.helpers import (
    cancer_frame,
    dataset_upload,
    diabetes_frame,
    run_train,
    version_of,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer(staff):
    return dataset_upload(cancer_frame(), name="cancer", target="diagnosis", user=staff)


def test_it_trains_stores_logs_and_registers_a_version_end_to_end(cancer, staff):
    run = run_train(cancer, user=staff)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    assert run.progress == 100
    assert run.attempts == 1
    assert run.started_at <= run.finished_at
    assert run.duration.total_seconds() >= 0
    assert run.is_terminal
    version = version_of(run)
    assert version.version == 1
    assert version.registered_model.name == "cancer"
    assert version.registered_model.task == "classification"
    assert version.registered_model.target_column == "diagnosis"
    assert version.dataset_version == cancer
    assert version.created_by == staff
    assert version.source == ModelVersion.Source.TRAINED
    assert version.stage == "none"
    assert version.seed == 42
    assert version.params["n_estimators"] == 10
    assert sorted(version.classes) == ["benign", "malignant"]
    assert set(version.metrics) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert 0.8 < version.metrics["accuracy"] <= 1
    assert len(version.feature_schema) == 30
    radius = next(c for c in version.feature_schema if c["name"] == "mean radius")
    assert radius["kind"] == "numeric"
    assert radius["min"] < radius["max"]
    assert "confusion_matrix" in version.artifacts
    assert "feature_importances" in version.artifacts
    assert version.training_summary["split"]["n_test"] == 40
    # Five holdout rows the predict form offers, each with every feature.
    assert len(version.example_rows) == 5
    # (jsonb keeps keys in its own order: compare them as sets)
    assert all(set(row) == {c["name"] for c in version.feature_schema} for row in version.example_rows)

    skops_bytes = storage.read_bytes(version.skops_key)
    assert artifacts.sha256_hex(skops_bytes) == version.skops_sha256
    assert version.skops_key.endswith(f"{version.skops_sha256}.skops")
    assert version.onnx_status == ModelVersion.OnnxStatus.AVAILABLE, version.onnx_reason
    onnx_bytes = storage.read_bytes(version.onnx_key)
    assert artifacts.sha256_hex(onnx_bytes) == version.onnx_sha256
    # Both checksummed files load and agree on the holdout-sized sample.
    rows = cancer_frame().drop(columns="diagnosis").head(20)
    columns = columns_from_frame(rows, version.feature_schema)
    sk_labels, _ = predictor.SklearnPredictor(
        skops_bytes, sha256=version.skops_sha256, feature_schema=version.feature_schema
    ).predict_columns(columns)
    onnx_labels, _ = predictor.OnnxPredictor(
        onnx_bytes, sha256=version.onnx_sha256, feature_schema=version.feature_schema, classes=version.classes
    ).predict_columns(columns)
    assert sk_labels == onnx_labels

    summary = mlflow_helpers.run_read(version.mlflow_run_id)
    assert summary.status == "FINISHED"
    assert summary.tags["dataset.sha256"] == cancer.sha256
    assert summary.params["algorithm"] == "random_forest"
    assert summary.params["model.n_estimators"] == "10"
    assert summary.params["seed"] == "42"
    assert summary.metrics["accuracy"] == pytest.approx(version.metrics["accuracy"])
    assert run.mlflow_run_id == version.mlflow_run_id
    assert version.mlflow_version == 1
    loaded = mlflow_helpers.registered_model_read(
        name="cancer", version=version.mlflow_version, trusted=list(artifacts.TRUSTED_TYPES)
    )
    assert list(loaded.predict(rows)) == sk_labels


def test_a_regression_target_is_inferred_and_gets_regression_metrics(staff):
    diabetes = dataset_upload(diabetes_frame(), name="diabetes", target="progression", user=staff)

    run = run_train(diabetes, model_name="progression", algorithm="ridge", params={"alpha": 0.5})

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    assert run.task == "regression"
    version = version_of(run)
    assert set(version.metrics) == {"rmse", "mae", "r2"}
    assert version.classes is None
    assert "residuals" in version.artifacts
    assert version.params["alpha"] == 0.5


def _failed(run: TrainingRun, *fragments: str) -> None:
    assert run.status == TrainingRun.Status.FAILED
    assert run.finished_at is not None
    for fragment in fragments:
        assert fragment in run.error_message, run.error_message
    assert not ModelVersion.objects.filter(training_run=run).exists()


def test_an_unknown_target_column_fails_the_run_with_the_reason(cancer):
    run = run_train(cancer, target_column="survival")
    _failed(run, "The target column 'survival' is not in the dataset")


def test_a_target_with_one_class_fails_the_run(staff):
    frame = cancer_frame(60)
    frame["diagnosis"] = "benign"
    version = dataset_upload(frame, name="one-class", target="diagnosis")

    run = run_train(version, model_name="one-class", task="classification")

    _failed(run, "only one class", "'benign'")


def test_too_few_rows_for_the_split_fail_the_run(staff):
    frame = cancer_frame(12)
    frame.loc[1:3, "diagnosis"] = None
    version = dataset_upload(frame, name="tiny", target="diagnosis")

    run = run_train(version, model_name="tiny", test_size=0.5)

    _failed(run, "Too few rows: 9 usable after dropping 3 without a target")


def test_an_algorithm_of_the_other_task_fails_the_run(cancer):
    run = run_train(cancer, algorithm="ridge", params={})
    _failed(run, "Unknown algorithm 'ridge' for classification")


def test_the_worker_function_returns_normally_on_bad_input(cancer):
    run = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params={},
        created_by=None,
    )
    # Stored before the submission checked hyperparameters, or under an older catalogue.
    TrainingRun.objects.filter(pk=run.pk).update(params={"oops": 1})

    outcome = training_services.training_run_execute(run_id=run.pk)

    assert outcome.status == "failed"
    assert "Unknown hyperparameter 'oops'" in outcome.message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"params": [1, 2]}, "Hyperparameters must be a JSON object"),
        ({"params": "max_depth=3"}, "Hyperparameters must be a JSON object"),
        ({"algorithm": "xgboost"}, "Unknown algorithm 'xgboost'"),
        ({"task": "clustering"}, "Unknown task 'clustering'"),
        ({"seed": -1}, "The seed must be a whole number"),
        ({"seed": "42"}, "The seed must be a whole number"),
        ({"test_size": 1.5}, "The holdout fraction"),
        ({"test_size": 0.9}, "The holdout fraction must be from 0.05 to 0.5"),
        ({"test_size": 0.01}, "The holdout fraction must be from 0.05 to 0.5"),
        ({"seed": 2**32}, "The seed must be a whole number from 0 to 4294967295"),
        ({"params": {"n_estimators": "many"}}, "Hyperparameter 'n_estimators'"),
        ({"params": {"learning_rate": 0.1}}, "Unknown hyperparameter 'learning_rate'"),
        ({"algorithm": "logistic_regression", "task": "regression"}, "exists only for classification"),
        ({"model_name": "Bad Name!"}, "Model name 'Bad Name!' is not valid"),
        ({"model_name": ""}, "A model name is required"),
        ({"dataset_version": 999_999}, "Dataset version 999999 does not exist"),
    ],
)
def test_malformed_requests_are_refused_before_a_run_is_recorded(cancer, overrides, message):
    arguments = {
        "dataset_version": cancer,
        "model_name": "cancer",
        "algorithm": "random_forest",
        "params": {},
        "created_by": None,
        **overrides,
    }

    with pytest.raises(ValidationError) as caught:
        training_services.training_run_create(**arguments)

    assert any(message in m for m in caught.value.messages), caught.value.messages
    assert not TrainingRun.objects.exists()
    assert not RegisteredModel.objects.exists()


def test_a_run_for_another_target_under_an_existing_model_name_is_refused(cancer):
    RegisteredModel.objects.create(name="cancer", task="classification", target_column="diagnosis")

    with pytest.raises(ValidationError, match="predicts 'diagnosis'"):
        training_services.training_run_create(
            dataset_version=cancer,
            model_name="cancer",
            algorithm="random_forest",
            params={},
            created_by=None,
            target_column="mean radius",
        )


def test_an_inferred_task_that_contradicts_the_model_fails_the_run(cancer):
    RegisteredModel.objects.create(name="cancer", task="regression", target_column="diagnosis")

    run = run_train(cancer)

    _failed(run, "holds regression versions")


def test_the_run_is_queued_for_the_worker_when_the_transaction_commits(
    cancer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = training_services.training_run_create(
            dataset_version=cancer,
            model_name="cancer",
            algorithm="logistic_regression",
            params={"C": 0.5},
            created_by=None,
        )
        assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.QUEUED

    assert any("training_run_create" in getattr(c, "__qualname__", "") for c in callbacks)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message


def test_the_same_inputs_and_seed_give_identical_predictions_from_two_versions(cancer):
    first = version_of(run_train(cancer, algorithm="hist_gradient_boosting", params={"max_iter": 20}, seed=7))
    second = version_of(
        run_train(cancer, algorithm="hist_gradient_boosting", params={"max_iter": 20}, seed=7)
    )

    assert (first.version, second.version) == (1, 2)
    assert first.metrics == second.metrics
    rows = cancer_frame().drop(columns="diagnosis")
    columns = columns_from_frame(rows, first.feature_schema)
    predictions = []
    for version in (first, second):
        model = predictor.SklearnPredictor(
            storage.read_bytes(version.skops_key),
            sha256=version.skops_sha256,
            feature_schema=version.feature_schema,
        )
        predictions.append(model.predict_columns(columns))
    assert predictions[0][0] == predictions[1][0]
    np.testing.assert_array_equal(np.asarray(predictions[0][1]), np.asarray(predictions[1][1]))


def test_a_different_seed_changes_the_split(cancer):
    first = version_of(run_train(cancer, seed=1))
    second = version_of(run_train(cancer, seed=2))

    assert (
        first.training_summary["split"]["holdout_sha256"]
        != second.training_summary["split"]["holdout_sha256"]
    )


@pytest.fixture(params=["columnar copy", "csv only"])
def stored_dataset_key(request, cancer):
    """The object a run reads: the columnar copy, or the CSV of a version stored before copies existed."""
    if request.param == "csv only":
        DatasetVersion.objects.filter(pk=cancer.pk).update(columnar_key="", columnar_sha256="")
        cancer.refresh_from_db()
        return cancer.object_key
    return cancer.columnar_key


def test_a_damaged_dataset_file_fails_the_run_without_training(cancer, stored_dataset_key):
    storage.delete(stored_dataset_key)
    storage.put_bytes(stored_dataset_key, b"mean radius,survival\n999,1\n")

    run = run_train(cancer)

    _failed(run, "does not match its recorded sha256")


def test_a_missing_dataset_file_fails_the_run(cancer, stored_dataset_key):
    storage.delete(stored_dataset_key)

    run = run_train(cancer)

    _failed(run, "missing from object storage")


def test_retrying_a_failed_run_queues_a_new_run_with_the_same_inputs(cancer, staff):
    failed = run_train(cancer, params={"n_estimators": 5}, target_column="survival")
    assert failed.status == TrainingRun.Status.FAILED

    retry = training_services.training_run_retry(training_run=failed, created_by=staff)

    assert retry.pk != failed.pk
    assert (retry.params, retry.seed, retry.algorithm, retry.target_column) == (
        {"n_estimators": 5},
        42,
        "random_forest",
        "survival",
    )
    assert retry.status == TrainingRun.Status.QUEUED
    with pytest.raises(ValidationError, match="Only failed runs"):
        training_services.training_run_retry(training_run=retry, created_by=staff)
