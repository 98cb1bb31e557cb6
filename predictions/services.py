"""Writes for predictions: validate rows, call the model of the resolved version, store every row at once."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from ml.errors import PredictionInputError
from mlops_site.errors import problem
from models_registry.models import ModelVersion
from predictions import model_cache, selectors
from predictions.errors import InputInvalid
from predictions.models import Channel, Prediction, PredictionRequest
from predictions.validation import (
    NOT_FINITE_OUTPUT,
    NOT_FINITE_OUTPUT_MESSAGE,
    RowsInvalid,
    not_finite_rows,
    rows_validate,
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")


def max_rows() -> int:
    return settings.PREDICTION_MAX_ROWS


@dataclass(frozen=True)
class PredictionOutcome:
    request: PredictionRequest
    predictions: list[Prediction]

    @property
    def model_version(self) -> ModelVersion:
        return self.request.model_version


def _request_id_check(request_id: Any) -> None:
    if request_id is not None and (not isinstance(request_id, str) or not _REQUEST_ID.match(request_id)):
        raise InputInvalid(
            [
                problem(
                    "A request id must be 1 to 64 letters, digits, dots, colons, underscores or hyphens.",
                    field="request_id",
                    code="invalid_option",
                )
            ]
        )


def _probabilities(classes: list[Any] | None, row: list[float] | None) -> dict[str, float] | None:
    if row is None or not classes:
        return None
    return {str(label): float(p) for label, p in zip(classes, row, strict=True)}


def prediction_make(
    *,
    registered_model_name: str,
    rows: Any,
    user: Any,
    channel: str,
    version: int | None = None,
    stage: str | None = None,
    request_id: str | None = None,
) -> PredictionOutcome:
    """Predict `rows` with the pinned version or the one in `stage` (default production), storing every row
    in one bulk insert.

    Raises InputInvalid (every problem per row and field; nothing stored), ModelNotFound, NoVersionInStage,
    model_cache.ModelUnavailable, or storage.StorageError while a model file is first read.
    """
    if channel not in Channel.values:
        raise ValueError(f"unknown channel {channel!r}")
    stage = selectors.prediction_target_check(version=version, stage=stage)
    _request_id_check(request_id)
    started = time.perf_counter()
    model_version = model_cache.resolutions.resolve(
        registered_model_name=registered_model_name, version=version, stage=stage
    )
    validated = rows_validate(
        rows=rows,
        feature_schema=model_version.feature_schema,
        max_rows=max_rows(),
        max_text_chars=settings.PREDICTION_MAX_TEXT_CHARS,
    )
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(model_version))
    try:
        labels, probabilities = predictor.predict_columns(validated.columns)
    except PredictionInputError as exc:
        raise RowsInvalid([problem(str(exc), code="not_scorable")]) from exc
    unscorable = not_finite_rows(labels, probabilities)
    if len(unscorable):
        raise RowsInvalid(
            [
                problem(NOT_FINITE_OUTPUT_MESSAGE, row=int(index) + 1, code=NOT_FINITE_OUTPUT)
                for index in unscorable
            ]
        )
    latency_ms = (time.perf_counter() - started) * 1000
    classes = model_version.classes or predictor.classes
    with transaction.atomic():
        request = PredictionRequest.objects.create(
            request_id=request_id or uuid.uuid4().hex,
            user=user,
            channel=channel,
            model_version=model_version,
            stage="" if version is not None else stage,
            n_rows=validated.n_rows,
            latency_ms=latency_ms,
        )
        predictions = Prediction.objects.bulk_create(
            [
                Prediction(
                    request=request,
                    row_index=index,
                    user=user,
                    model_version=model_version,
                    channel=channel,
                    inputs=validated.inputs[index],
                    prediction=label,
                    probabilities=_probabilities(classes, probabilities[index] if probabilities else None),
                    warnings=validated.warnings[index],
                    created_at=request.created_at,
                )
                for index, label in enumerate(labels)
            ]
        )
    return PredictionOutcome(request=request, predictions=predictions)
