"""Builders and fixtures shared by the registry page, API, admin and browser tests."""

from __future__ import annotations

from typing import Any

from models_registry.models import ModelVersion, RegisteredModel

CLASSIFICATION_METRICS = {"accuracy": 0.91, "balanced_accuracy": 0.9, "f1_macro": 0.89, "roc_auc": 0.95}


def make_model(name: str = "churn", *, task: str = "classification", **fields: Any) -> RegisteredModel:
    return RegisteredModel.objects.create(
        name=name, task=task, target_column=fields.pop("target", "label"), **fields
    )


def make_version(
    registered: RegisteredModel,
    number: int,
    *,
    stage: str = "none",
    metrics: dict[str, float] | None = None,
    **fields: Any,
) -> ModelVersion:
    """A version row without files behind it: enough for pages and transitions, not for predictions."""
    return ModelVersion.objects.create(
        registered_model=registered,
        version=number,
        stage=stage,
        task=registered.task,
        algorithm=fields.pop("algorithm", "random_forest"),
        target_column=registered.target_column,
        metrics=CLASSIFICATION_METRICS if metrics is None else metrics,
        feature_schema=fields.pop(
            "feature_schema",
            [
                {"name": "age", "kind": "numeric", "dtype": "int64", "min": 18, "max": 79},
                {"name": "city", "kind": "categorical", "dtype": "string", "categories": ["Berlin", "Paris"]},
            ],
        ),
        skops_key=fields.pop("skops_key", f"models/sha256/aa/{number:064d}.skops"),
        skops_sha256=fields.pop("skops_sha256", f"{number:064d}"),
        **fields,
    )
