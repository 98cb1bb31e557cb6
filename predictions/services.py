"""Writes for predictions: validate rows, call the model of the resolved version (or, for the canary's
share, the challenger's), store every row at once."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from ml.errors import PredictionInputError
from mlops_site import inserts, storage
from mlops_site.errors import problem
from models_registry.models import ModelVersion, Stage
from monitoring import prometheus
from predictions import live_rollups, model_cache, routing, selectors
from predictions.errors import InputInvalid
from predictions.models import (
    Channel,
    Prediction,
    PredictionKey,
    PredictionRequest,
)
from predictions.validation import (
    NOT_FINITE_OUTPUT,
    NOT_FINITE_OUTPUT_MESSAGE,
    RowsInvalid,
    ValidatedRows,
    not_finite_rows,
    rows_validate,
)

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
#: A client's key for a row: printable ASCII without spaces, so it survives CSV files and URLs unchanged.
_KEY = re.compile(r"^[!-~]{1,128}\Z")
KEY_RULE = "1 to 128 printable characters without spaces"
# Channel.values builds a new list on every read.
_CHANNELS = frozenset(Channel.values)


def max_rows() -> int:
    return settings.PREDICTION_MAX_ROWS


@dataclass(frozen=True)
class PredictionOutcome:
    """The stored rows in the order sent, and the request rows that hold them.

    A canary may split one call: then the version asked for and the challenger each answer their rows and
    each has a PredictionRequest (same request_id). `request` is the one holding the first row, so a
    single-row call's `request` and `model_version` are those of the version that answered it.
    """

    request: PredictionRequest
    predictions: list[Prediction]
    requests: tuple[PredictionRequest, ...] = ()
    # Ids of the rows the canary's challenger answered.
    challenger_rows: frozenset[int] = field(default_factory=frozenset)

    @property
    def model_version(self) -> ModelVersion:
        return self.request.model_version

    def served_by(self, prediction: Prediction) -> str:
        return routing.CHALLENGER if prediction.pk in self.challenger_rows else routing.CHAMPION

    @property
    def split(self) -> bool:
        """Whether the canary split the rows between the version asked for and the challenger."""
        return 0 < len(self.challenger_rows) < len(self.predictions)

    @property
    def champion_version(self) -> ModelVersion | None:
        """The version asked for, when it answered any row."""
        return next((p.model_version for p in self.predictions if p.pk not in self.challenger_rows), None)


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


def probabilities_of(classes: list[Any] | None, row: list[float] | None) -> dict[str, float] | None:
    if row is None or not classes:
        return None
    return {str(label): float(p) for label, p in zip(classes, row, strict=True)}


@dataclass
class _Answered:
    """Rows one version answered: their positions in the call, what is stored and its output."""

    version: ModelVersion
    positions: list[int]
    inputs: list[dict[str, Any]]
    warnings: list[list[dict[str, str]]]
    labels: list[Any]
    probabilities: list[dict[str, float] | None]
    model_ms: float
    # The answered rows' model-ready arrays, for the drift rollups.
    columns: dict[str, np.ndarray]


def _subset(validated: ValidatedRows, positions: list[int]) -> ValidatedRows:
    if len(positions) == validated.n_rows:
        return validated
    taken = np.asarray(positions, dtype=int)
    return ValidatedRows(
        columns={name: values[taken] for name, values in validated.columns.items()},
        inputs=[validated.inputs[i] for i in positions],
        warnings=[validated.warnings[i] for i in positions],
    )


def _answer(
    version: ModelVersion, validated: ValidatedRows, positions: list[int]
) -> tuple[_Answered, list[int]]:
    """The version's answers to `validated` (rows at `positions` of the call), and the positions of the rows
    it gave no finite output for (left out of the answers). Raises RowsInvalid when it cannot score them."""
    started = time.perf_counter()
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
    try:
        labels, probabilities = predictor.predict_columns(validated.columns)
    except PredictionInputError as exc:
        raise RowsInvalid([problem(str(exc), code="not_scorable")]) from exc
    unscorable = {int(i) for i in not_finite_rows(labels, probabilities)}
    classes = version.classes or predictor.classes
    kept = [i for i in range(len(labels)) if i not in unscorable]
    answered = _Answered(
        version=version,
        positions=[positions[i] for i in kept],
        inputs=[validated.inputs[i] for i in kept],
        warnings=[validated.warnings[i] for i in kept],
        labels=[labels[i] for i in kept],
        probabilities=[probabilities_of(classes, probabilities[i] if probabilities else None) for i in kept],
        model_ms=(time.perf_counter() - started) * 1000,
        columns=_subset(validated, kept).columns,
    )
    return answered, sorted(positions[i] for i in unscorable)


def _challenger_answer(share: routing.CanaryShare) -> _Answered | None:
    """The challenger's answers to its canary share; rows it gives no finite output for are left out, so the
    version asked for answers them. None sends every row back (its model file unreadable, or it cannot score
    them): a canary never turns an answerable production request into an error.
    """
    try:
        answered, _unscorable = _answer(share.challenger, share.validated, share.positions)
    except (RowsInvalid, model_cache.ModelUnavailable, storage.StorageError) as exc:
        logger.warning("%s could not answer its canary share; the champion does: %s", share.challenger, exc)
        return None
    return answered


def _request_of(
    part: _Answered, *, user: Any, channel: str, stage: str, request_id: str, latency_ms: float
) -> PredictionRequest:
    return PredictionRequest(
        request_id=request_id,
        user=user,
        channel=channel,
        model_version=part.version,
        stage=stage,
        n_rows=len(part.positions),
        latency_ms=latency_ms,
    )


def _rows_of(part: _Answered, request: PredictionRequest, *, user: Any, channel: str) -> list[Prediction]:
    """The part's Prediction rows; `request`'s values (its time) are set already."""
    return [
        Prediction(
            request=request,
            row_index=position,
            user=user,
            model_version=part.version,
            channel=channel,
            inputs=part.inputs[index],
            prediction=part.labels[index],
            probabilities=part.probabilities[index],
            confidence=max(part.probabilities[index].values()) if part.probabilities[index] else None,
            warnings=part.warnings[index],
            created_at=request.created_at,
        )
        for index, position in enumerate(part.positions)
    ]


def _rollups_of(part: _Answered, request: PredictionRequest, *, latency_ms: float) -> live_rollups.Answered:
    return live_rollups.Answered(
        model_version=part.version,
        hour=request.created_at,
        latency_ms=latency_ms,
        columns=part.columns,
        predictions=part.labels,
        confidences=[max(p.values()) if p else None for p in part.probabilities],
    )


def _one_statement(answered: list[_Answered], keys: list[str] | None) -> bool:
    """Whether one statement can store the call: on PostgreSQL, one version answering, no client keys, and
    the rollups summed per process (otherwise they join the rows' transaction)."""
    return (
        connection.vendor == "postgresql"
        and len(answered) == 1
        and keys is None
        and live_rollups.delay_seconds() > 0
        and len(answered[0].positions) <= inserts.MAX_ROWS
    )


def _store(
    answered: list[_Answered],
    *,
    n_rows: int,
    keys: list[str] | None,
    user: Any,
    channel: str,
    stage: str,
    request_id: str,
    latency_ms: float,
) -> list[Prediction]:
    """One PredictionRequest per answering version and every row in one bulk insert per version; returns
    the rows in the order they were sent."""
    about = {
        "user": user,
        "channel": channel,
        "stage": stage,
        "request_id": request_id,
        "latency_ms": latency_ms,
    }
    if _one_statement(answered, keys):
        # The common call: the request and its rows in one statement, atomic without a transaction, so the
        # server is asked once instead of four times (BEGIN, two INSERTs, COMMIT).
        (part,) = answered
        request = _request_of(part, **about)
        stored = inserts.family_insert(
            request,
            lambda parent: _rows_of(part, parent, user=user, channel=channel),
            link="request",
            synchronous_commit=settings.PREDICTION_LOG_DURABLE,
        )
        live_rollups.answered_add(_rollups_of(part, request, latency_ms=latency_ms))
        by_row = {prediction.row_index: prediction for prediction in stored}
        return [by_row[position] for position in range(n_rows)]
    by_position: dict[int, Prediction] = {}
    registered_model_id = answered[0].version.registered_model_id
    with transaction.atomic():
        if not settings.PREDICTION_LOG_DURABLE and connection.vendor == "postgresql":
            # This transaction only: the commit returns before its WAL is flushed (see the setting).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        if keys is not None:
            _keys_taken(answered[0].version, keys)
        for part in answered:
            (request,) = inserts.objects_insert([_request_of(part, **about)])
            stored = inserts.objects_insert(_rows_of(part, request, user=user, channel=channel))
            by_position.update((prediction.row_index, prediction) for prediction in stored)
            live_rollups.answered_add(_rollups_of(part, request, latency_ms=latency_ms))
        predictions = [by_position[position] for position in range(n_rows)]
        if keys is not None:
            try:
                with transaction.atomic():
                    PredictionKey.objects.bulk_create(
                        [
                            PredictionKey(registered_model_id=registered_model_id, key=key, prediction=p)
                            for key, p in zip(keys, predictions, strict=True)
                        ]
                    )
            except IntegrityError:
                # Another request took one of the keys since the check above.
                _keys_taken(answered[0].version, keys)
                raise
    return predictions


@prometheus.prediction_rejections_counted
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

    Canary: when production is asked for (no pinned version) and the model is in canary mode, each row
    whose routing key (its key, else the user, else the request id) falls in the canary's percent is
    answered by the challenger instead, checked against the challenger's own schema; a row the challenger
    refuses or cannot score is answered by production. The rows then form two PredictionRequests; each
    Prediction records the version that answered it. Shadow mode adds nothing here: a worker scores the
    stored rows later (predictions.shadow).

    Raises InputInvalid (every problem per row and field; nothing stored), ModelNotFound, NoVersionInStage,
    model_cache.ModelUnavailable, or storage.StorageError while a model file is first read.
    """
    if channel not in _CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    stage = selectors.prediction_target_check(version=version, stage=stage)
    _request_id_check(request_id)
    request_id = request_id or uuid.uuid4().hex
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
    validated_ms = (time.perf_counter() - started) * 1000
    share = None
    if version is None and stage == Stage.PRODUCTION:
        share = routing.canary_share(
            model_version, rows=rows, keys=keys, user=user, request_id=request_id, n_rows=validated.n_rows
        )
    by_challenger = _challenger_answer(share) if share is not None else None
    answered: list[_Answered] = [by_challenger] if by_challenger is not None else []
    taken = set(by_challenger.positions) if by_challenger is not None else set()
    positions = [i for i in range(validated.n_rows) if i not in taken]
    if positions:
        by_champion, unscorable = _answer(model_version, _subset(validated, positions), positions)
        if unscorable:
            raise RowsInvalid(
                [problem(NOT_FINITE_OUTPUT_MESSAGE, row=i + 1, code=NOT_FINITE_OUTPUT) for i in unscorable]
            )
        answered.insert(0, by_champion)
    answered = [part for part in answered if part.positions]
    latency_ms = validated_ms + sum(part.model_ms for part in answered)
    storing_started = time.perf_counter()
    predictions = _store(
        answered,
        n_rows=validated.n_rows,
        keys=keys,
        user=user,
        channel=channel,
        stage="" if version is not None else stage,
        request_id=request_id,
        latency_ms=latency_ms,
    )
    prometheus.prediction_observed(
        model=model_version.registered_model.name,
        channel=channel,
        rows_by_version={part.version.version: len(part.positions) for part in answered},
        validation=validated_ms / 1000,
        model_call=(latency_ms - validated_ms) / 1000,
        storing=time.perf_counter() - storing_started,
        total=time.perf_counter() - started,
    )
    return PredictionOutcome(
        request=predictions[0].request,
        predictions=predictions,
        requests=tuple(dict.fromkeys(p.request for p in predictions)),
        challenger_rows=frozenset(p.pk for p in predictions if p.row_index in taken),
    )
