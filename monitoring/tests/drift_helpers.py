"""Builders of the drift tests: a small classifier with a reference profile, and live traffic for it."""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml import artifacts
from ml.pipeline import columns_from_frame, frame_prepare
from ml.train import model_train
from mlops_site import storage
from monitoring import drift_rollups

FEATURES = [
    {"name": "x", "kind": "numeric"},
    {"name": "z", "kind": "numeric"},
    {"name": "c", "kind": "categorical"},
]
CATEGORIES = np.array(["a", "b", "c"], dtype=object)


def inputs_draw(n: int, *, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """`n` rows; `shift` moves x by that many standard deviations and tilts c towards "c"."""
    tilt = min(max(shift, 0.0), 1.0) * 0.4
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "z": rng.normal(0.0, 1.0, n),
            "c": rng.choice(CATEGORIES, n, p=[0.5 - tilt, 0.3, 0.2 + tilt]),
        }
    )


def labels_of(frame: pd.DataFrame, *, rng: np.random.Generator) -> np.ndarray:
    score = frame["x"] + 0.5 * frame["z"] + np.where(frame["c"] == "c", 0.5, 0.0)
    p = 1 / (1 + np.exp(-2 * score.to_numpy()))
    return np.where(rng.uniform(size=len(frame)) < p, "yes", "no").astype(object)


@dataclass(frozen=True)
class Trained:
    pipeline: Any
    feature_schema: list[dict[str, Any]]
    classes: list[Any]
    metrics: dict[str, float]
    profile: dict[str, Any]
    skops_bytes: bytes
    skops_sha256: str


@functools.cache
def trained() -> Trained:
    rng = np.random.default_rng(0)
    frame = inputs_draw(3000, rng=rng)
    frame["label"] = labels_of(frame, rng=rng)
    result = model_train(
        frame=frame,
        schema_columns=[*FEATURES, {"name": "label", "kind": "categorical"}],
        target_column="label",
        algorithm="logistic_regression",
        seed=0,
    )
    data = artifacts.skops_dump(result.pipeline)
    return Trained(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        classes=result.classes or [],
        metrics=result.metrics,
        profile=json.loads(json.dumps(result.reference_profile)),
        skops_bytes=data,
        skops_sha256=artifacts.sha256_hex(data),
    )


def drift_version(*, name: str = "drifty", version: int = 1, stage: str = "production", profile: bool = True):
    """A production version of the small classifier, its reference profile set and its file stored."""
    from models_registry.models import ModelVersion, RegisteredModel

    model = trained()
    registered, _ = RegisteredModel.objects.get_or_create(
        name=name, defaults={"task": "classification", "target_column": "label"}
    )
    key = f"models/{model.skops_sha256}.skops"
    storage.put_bytes(key, model.skops_bytes)
    return ModelVersion.objects.create(
        registered_model=registered,
        version=version,
        task="classification",
        algorithm="logistic_regression",
        feature_schema=model.feature_schema,
        target_column="label",
        classes=model.classes,
        metrics=model.metrics,
        skops_key=key,
        skops_sha256=model.skops_sha256,
        stage=stage,
        reference_profile=model.profile if profile else None,
    )


@dataclass
class Traffic:
    columns: dict[str, np.ndarray]
    predictions: list[Any]
    confidences: list[float]
    truth: np.ndarray


def traffic(n: int, *, rng: np.random.Generator, shift: float = 0.0) -> Traffic:
    """What the prediction service holds for `n` live rows: validated columns, answers and confidences."""
    model = trained()
    frame = frame_prepare(inputs_draw(n, rng=rng, shift=shift), FEATURES)
    proba = model.pipeline.predict_proba(frame)
    return Traffic(
        columns={
            name: values.copy() for name, values in columns_from_frame(frame, model.feature_schema).items()
        },
        predictions=model.pipeline.predict(frame).tolist(),
        confidences=proba.max(axis=1).tolist(),
        truth=labels_of(frame, rng=rng),
    )


def traffic_store(
    version: Any, *, n: int, hours: list[dt.datetime], rng: np.random.Generator, shift: float = 0.0
):
    """Spread `n` rows of traffic over `hours` in batches, as the prediction service would add them."""
    sent = traffic(n, rng=rng, shift=shift)
    for part, hour in zip(np.array_split(np.arange(n), len(hours)), hours, strict=True):
        drift_rollups.prediction_features_add(
            model_version=version,
            columns={name: values[part] for name, values in sent.columns.items()},
            predictions=[sent.predictions[i] for i in part],
            confidences=[sent.confidences[i] for i in part],
            hour=hour,
        )
    return sent
