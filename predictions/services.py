"""Writes for predictions: validate rows, call the model of the resolved version, store every row at once."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from ml.errors import PredictionInputError
from mlops_site import rollups
from mlops_site.errors import problem
from models_registry.models import ModelVersion
from predictions import model_cache, selectors
from predictions.errors import InputInvalid
from predictions.models import Channel, Prediction, PredictionHourly, PredictionKey, PredictionRequest
from predictions.validation import (
    NOT_FINITE_OUTPUT,
    NOT_FINITE_OUTPUT_MESSAGE,
    RowsInvalid,
    not_finite_rows,
    rows_validate,
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
#: A client's key for a row: printable ASCII without spaces, so it survives CSV files and URLs unchanged.
_KEY = re.compile(r"^[!-~]{1,128}\Z")
KEY_RULE = "1 to 128 printable characters without spaces"


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


def _keys_check(keys: Any, *, n_rows: int) -> list[str] | None:
    """The rows' keys, one per row, or None; raises InputInvalid naming each bad or repeated key's row."""
    if keys is None:
        return None
    if not isinstance(keys, list) or len(keys) != n_rows:
        raise InputInvalid(
            [problem(f"Give one key per row: {n_rows} in all.", field="keys", code="invalid_option")]
        )
    problems: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    for row, key in enumerate(keys, start=1):
        if not isinstance(key, str) or not _KEY.match(key):
            problems.append(problem(f"A key must be {KEY_RULE}; got {key!r:.80}.", row=row, field="key"))
        elif key in first_row:
            problems.append(
                problem(
                    f"Key {key!r} is also row {first_row[key]}'s; keys are unique per model.",
                    row=row,
                    field="key",
                    code="duplicate_key",
                )
            )
        else:
            first_row[key] = row
    if problems:
        raise InputInvalid(problems)
    return keys


def _keys_taken(version: ModelVersion, keys: list[str]) -> None:
    taken = set(
        PredictionKey.objects.filter(
            registered_model_id=version.registered_model_id, key__in=keys
        ).values_list("key", flat=True)
    )
    if taken:
        raise InputInvalid(
            [
                problem(
                    f"Key {key!r} already names a prediction of model '{version.registered_model.name}'.",
                    row=row,
                    field="key",
                    code="duplicate_key",
                )
                for row, key in enumerate(keys, start=1)
                if key in taken
            ]
        )


def prediction_hours_add(*, model_version_id: int, hour: dt.datetime, rows: int) -> None:
    """Count `rows` predicted by a version in an hour; call inside the transaction that stores them."""
    rollups.counters_add(
        PredictionHourly,
        keys=("model_version", "hour"),
        sums=("n",),
        deltas={(model_version_id, rollups.hour_of(hour)): (rows,)},
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
    keys: list[str] | None = None,
) -> PredictionOutcome:
    """Predict `rows` with the pinned version or the one in `stage` (default production), storing every row
    in one bulk insert.

    `keys` (one per row) are the client's own names for the rows, unique per registered model, by which
    feedback can name them later.

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
    keys = _keys_check(keys, n_rows=validated.n_rows)
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
    row_probabilities = [
        _probabilities(classes, probabilities[index] if probabilities else None)
        for index in range(len(labels))
    ]
    with transaction.atomic():
        if keys is not None:
            _keys_taken(model_version, keys)
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
                    probabilities=row_probabilities[index],
                    confidence=max(row_probabilities[index].values()) if row_probabilities[index] else None,
                    warnings=validated.warnings[index],
                    created_at=request.created_at,
                )
                for index, label in enumerate(labels)
            ]
        )
        if keys is not None:
            try:
                with transaction.atomic():
                    PredictionKey.objects.bulk_create(
                        [
                            PredictionKey(
                                registered_model_id=model_version.registered_model_id, key=key, prediction=p
                            )
                            for key, p in zip(keys, predictions, strict=True)
                        ]
                    )
            except IntegrityError:
                # Another request took one of the keys since the check above.
                _keys_taken(model_version, keys)
                raise
        prediction_hours_add(
            model_version_id=model_version.pk, hour=request.created_at, rows=validated.n_rows
        )
    return PredictionOutcome(request=request, predictions=predictions)
