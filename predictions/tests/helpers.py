"""Small trained models for the predictions tests: trained once per test session, stored per test."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from ml import artifacts
from ml.onnx_export import onnx_convert
from ml.train import model_train
from mlops_site import storage
from tests.factories import make_classification_frame


@dataclass(frozen=True)
class TrainedModel:
    task: str
    algorithm: str
    target_column: str
    feature_schema: list[dict[str, Any]]
    classes: list[Any] | None
    metrics: dict[str, float]
    skops_bytes: bytes
    skops_sha256: str
    onnx_bytes: bytes | None
    onnx_sha256: str | None
    sample_rows: list[dict[str, Any]]

    @property
    def skops_key(self) -> str:
        return f"models/{self.skops_sha256}.skops"

    @property
    def onnx_key(self) -> str:
        return f"models/{self.onnx_sha256}.onnx" if self.onnx_sha256 else ""

    def store(self) -> None:
        storage.put_bytes(self.skops_key, self.skops_bytes)
        if self.onnx_bytes is not None:
            storage.put_bytes(self.onnx_key, self.onnx_bytes)


def _frame(name: str) -> tuple[pd.DataFrame, str]:
    if name == "mixed":
        return make_classification_frame(rows=80, seed=1), "label"
    loader = {"cancer": load_breast_cancer, "iris": load_iris, "diabetes": load_diabetes}[name]
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    if name == "diabetes":
        return frame, "target"
    frame["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    if name == "cancer":
        # Ten features keep training and ONNX conversion fast; the page and API do not care about width.
        frame = frame[[*bunch.feature_names[:10], "target"]]
    return frame, "target"


@functools.cache
def trained_model(name: str, *, algorithm: str = "random_forest", seed: int = 0) -> TrainedModel:
    """Train once per session: 'mixed' (numeric + categorical), 'cancer' (binary), 'iris' (3 classes) or
    'diabetes' (regression)."""
    frame, target = _frame(name)
    task = "regression" if name == "diabetes" else "classification"
    schema = [
        {"name": column, "kind": "numeric" if pd.api.types.is_numeric_dtype(frame[column]) else "categorical"}
        for column in frame.columns
    ]
    for column in schema:
        if column["name"] == target and task == "classification":
            column["kind"] = "categorical"
    params = {"n_estimators": 10} if algorithm == "random_forest" else {}
    result = model_train(
        frame=frame,
        schema_columns=schema,
        target_column=target,
        algorithm=algorithm,
        params=params,
        task=task,
        seed=seed,
    )
    data = artifacts.skops_dump(result.pipeline)
    conversion = onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
    )
    assert conversion.available, conversion.reason
    features = [c["name"] for c in result.feature_schema]
    sample = frame[features].head(3).to_dict("records")
    return TrainedModel(
        task=result.task,
        algorithm=algorithm,
        target_column=target,
        feature_schema=result.feature_schema,
        classes=result.classes,
        metrics=result.metrics,
        skops_bytes=data,
        skops_sha256=artifacts.sha256_hex(data),
        onnx_bytes=conversion.data,
        onnx_sha256=conversion.sha256,
        sample_rows=[{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in sample],
    )


def make_model_version(
    *,
    trained: TrainedModel,
    name: str = "cancer",
    version: int = 1,
    stage: str = "production",
    onnx: bool = True,
) -> Any:
    """A registered model's version pointing at the stored files of `trained`."""
    from models_registry.models import ModelVersion, RegisteredModel

    registered, _ = RegisteredModel.objects.get_or_create(
        name=name, defaults={"task": trained.task, "target_column": trained.target_column}
    )
    trained.store()
    has_onnx = onnx and trained.onnx_bytes is not None
    return ModelVersion.objects.create(
        registered_model=registered,
        version=version,
        source=ModelVersion.Source.TRAINED,
        task=trained.task,
        algorithm=trained.algorithm,
        feature_schema=trained.feature_schema,
        target_column=trained.target_column,
        classes=trained.classes,
        metrics=trained.metrics,
        skops_key=trained.skops_key,
        skops_sha256=trained.skops_sha256,
        onnx_key=trained.onnx_key if has_onnx else "",
        onnx_sha256=(trained.onnx_sha256 or "") if has_onnx else "",
        onnx_status=ModelVersion.OnnxStatus.AVAILABLE if has_onnx else ModelVersion.OnnxStatus.UNAVAILABLE,
        stage=stage,
    )


def make_predictions(*, user: Any, count: int = 1, name: str = "cancer", channel: str = "api") -> list[Any]:
    """`count` stored predictions by `user` with the production version of `name`, through the service."""
    from predictions import services

    rows = (trained_model(name).sample_rows * count)[:count]
    outcome = services.prediction_make(registered_model_name=name, rows=rows, user=user, channel=channel)
    return outcome.predictions
