"""Builders shared by the training and registry tests: small bundled datasets uploaded as versions."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
from django.contrib.auth.models import AbstractBaseUser
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from datasets import services as dataset_services
from datasets.models import DatasetVersion
from models_registry.models import ModelVersion, RegisteredModel
from tests.factories import make_csv_bytes
from training import services as training_services
from training.models import TrainingRun

FAST_FOREST = {"n_estimators": 10, "max_depth": 4}


def cancer_frame(rows: int = 200) -> pd.DataFrame:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.sample(n=rows, random_state=0).reset_index(drop=True)
    # Text labels: the registry must carry classes that are not 0/1.
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    return frame.rename(columns={"target": "diagnosis"})


def iris_frame() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame
    return frame.rename(columns={"target": "species"})


def diabetes_frame(rows: int = 200) -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame.head(rows).rename(columns={"target": "progression"})


def dataset_upload(
    frame: pd.DataFrame, *, name: str, target: str, user: AbstractBaseUser | None = None
) -> DatasetVersion:
    version, _ = dataset_services.dataset_version_create(
        name=name,
        file=io.BytesIO(make_csv_bytes(frame)),
        target_column=target,
        created_by=user,
        original_filename=f"{name}.csv",
    )
    return version


def run_train(
    dataset_version: DatasetVersion,
    *,
    model_name: str = "cancer",
    algorithm: str = "random_forest",
    params: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    **kwargs: Any,
) -> TrainingRun:
    """Queue a run and execute it in this thread, as a worker would; returns the refreshed run."""
    from training.tasks import training_run_execute_task

    run = training_services.training_run_create(
        dataset_version=dataset_version,
        model_name=model_name,
        algorithm=algorithm,
        params=FAST_FOREST if params is None and algorithm == "random_forest" else (params or {}),
        created_by=user,
        **kwargs,
    )
    training_run_execute_task.apply(args=[run.pk])
    run.refresh_from_db()
    return run


def version_of(run: TrainingRun) -> ModelVersion:
    return ModelVersion.objects.select_related("registered_model").get(training_run=run)


def model_make(name: str = "churn", *, task: str = "classification", **fields: Any) -> RegisteredModel:
    return RegisteredModel.objects.create(name=name, task=task, target_column="label", **fields)


def version_make(
    registered: RegisteredModel, number: int, *, metrics: dict[str, float] | None = None, stage: str = "none"
) -> ModelVersion:
    """A version row without files, for transition tests that never load the model."""
    return ModelVersion.objects.create(
        registered_model=registered,
        version=number,
        task=registered.task,
        algorithm="random_forest",
        feature_schema=[{"name": "age", "kind": "numeric", "dtype": "float64", "min": 18.0, "max": 80.0}],
        target_column=registered.target_column,
        classes=["no", "yes"] if registered.task == "classification" else None,
        metrics=metrics if metrics is not None else {"accuracy": 0.9},
        skops_key=f"models/sha256/00/{'0' * 63}{number}.skops",
        skops_sha256=f"{'0' * 63}{number}",
        stage=stage,
    )


def stored_model_files(prefix: str = "models") -> list[str]:
    """Every object under the prefix, on the filesystem or S3."""
    from django.core.files.storage import default_storage

    if not default_storage.exists(prefix) and not prefix.startswith("models/"):
        return []
    folders, files = default_storage.listdir(prefix)
    found = [f"{prefix}/{name}" for name in files]
    for folder in folders:
        found += stored_model_files(f"{prefix}/{folder}")
    return found
