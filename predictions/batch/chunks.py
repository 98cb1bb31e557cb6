"""A batch job's chunks: the model loaded once per worker, each chunk validated, predicted and stored."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from jobs.chunked import StepSeconds
from ml.errors import PredictionInputError
from ml.pipeline import NUMERIC
from mlops_site import storage
from models_registry.models import ModelVersion
from monitoring import drift_rollups, prometheus
from predictions import live_rollups, model_cache
from predictions.batch import files as batch_files
from predictions.batch import outputs as batch_outputs
from predictions.batch import rows as batch_rows
from predictions.batch.attempt import BatchRunError, ChunkAttempt
from predictions.batch.table_validation import TableCheck, table_validate
from predictions.models import BatchPredictionChunk, BatchPredictionJob, PredictionRequest
from predictions.validation import NOT_FINITE_OUTPUT, NOT_FINITE_OUTPUT_MESSAGE, not_finite_rows


@dataclass(frozen=True)
class Model:
    predictor: model_cache.Predictor
    feature_schema: list[dict[str, Any]]
    # Set when the model gives probabilities: the column names after "probability_".
    classes: list[str] | None


def _probe_row(feature_schema: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for column in feature_schema:
        if column["kind"] == NUMERIC:
            low = column.get("min")
            columns[column["name"]] = np.array([low if low is not None else 0.0], dtype="float64")
        else:
            categories = column.get("categories") or [""]
            columns[column["name"]] = np.array([categories[0]], dtype=object)
    return columns


def model_load(version: ModelVersion) -> Model:
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
    # Every part must have the same columns, also a part without one valid row: one probe row tells
    # whether this model gives probabilities.
    try:
        _, probabilities = predictor.predict_columns(_probe_row(version.feature_schema))
    except PredictionInputError as exc:
        raise BatchRunError(f"{version} cannot predict: {exc}") from exc
    classes = None
    if probabilities is not None:
        known = version.classes or predictor.classes
        width = len(probabilities[0])
        classes = [str(c) for c in known] if known and len(known) == width else [str(i) for i in range(width)]
    return Model(predictor=predictor, feature_schema=version.feature_schema, classes=classes)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while chunks are processed.

    A chunk allocates hundreds of thousands of small objects (JSON texts, row tuples); each allocation
    burst set off full collections that walk every object of the worker, Django and scikit-learn
    included, and cost more than the prediction itself. Nothing here builds reference cycles, so
    reference counting frees everything anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class Computed:
    """A chunk checked and predicted, waiting to be stored."""

    chunk: batch_files.Chunk
    check: TableCheck
    labels: list[Any]
    probabilities: np.ndarray
    # The Prediction rows to insert; None when no row was predicted or the job does not store them.
    rows: batch_rows.Rows | None
    # When the rows were predicted: their created_at, and the hour the rollups count them in.
    predicted_at: dt.datetime
    # The rows binned for the drift rollups, added in the transaction that stores them.
    feature_deltas: drift_rollups.FeatureDeltas = dataclasses.field(default_factory=dict)


def _outputs_refused(check: TableCheck, unscorable: np.ndarray) -> TableCheck:
    """`check` with the predicted rows at positions `unscorable` (among its valid rows) made errors."""
    positions = np.flatnonzero(check.valid)[unscorable]
    valid = check.valid.copy()
    valid[positions] = False
    count = len(positions)
    added = {
        "position": positions,
        "field": np.full(count, "", dtype=object),
        "code": np.full(count, NOT_FINITE_OUTPUT, dtype=object),
        "message": np.full(count, NOT_FINITE_OUTPUT_MESSAGE, dtype=object),
        "value": np.full(count, "", dtype=object),
    }
    merged = {name: np.concatenate([check.errors[name], added[name]]) for name in added}
    order = np.argsort(merged["position"], kind="stable")
    kept = np.ones(check.n_valid, dtype=bool)
    kept[unscorable] = False
    return dataclasses.replace(
        check,
        columns={name: values[kept] for name, values in check.columns.items()},
        valid=valid,
        errors={name: values[order] for name, values in merged.items()},
    )


def chunk_compute(
    attempt: ChunkAttempt | StepSeconds, model: Model, *, job: BatchPredictionJob, chunk: batch_files.Chunk
) -> Computed:
    """Validate and predict a chunk of `job`, write its errors part, encode its rows for the database (when
    the job stores them) and bin them for the drift rollups."""
    started = time.perf_counter()
    check = table_validate(
        table=chunk.table,
        feature_schema=model.feature_schema,
        max_text_chars=settings.PREDICTION_MAX_TEXT_CHARS,
    )
    started = attempt.timed("validate", started)
    labels: list[Any] = []
    probabilities = np.empty((0, len(model.classes or [])))
    if check.n_valid:
        try:
            labels, raw_probabilities = model.predictor.predict_columns(check.columns)
        except PredictionInputError as exc:
            raise BatchRunError(
                f"Rows {chunk.rows[0]} to {chunk.rows[-1]}: the model could not score them: {exc}"
            ) from exc
        if model.classes is not None and raw_probabilities is not None:
            probabilities = np.asarray(raw_probabilities, dtype="float64")
        unscorable = not_finite_rows(labels, probabilities if len(probabilities) else None)
        if len(unscorable):
            check = _outputs_refused(check, unscorable)
            kept = np.ones(len(labels), dtype=bool)
            kept[unscorable] = False
            labels = [label for label, keep in zip(labels, kept, strict=True) if keep]
            probabilities = probabilities[kept] if len(probabilities) else probabilities
    started = attempt.timed("predict", started)
    if check.n_errors or chunk.ragged:
        batch_outputs.object_replace(
            batch_outputs.part_key(job, "errors", chunk.index),
            io.BytesIO(batch_outputs.errors_part(chunk, check)),
        )
    started = attempt.timed("write", started)
    rows = None
    predicted_at = timezone.now()
    feature_deltas: drift_rollups.FeatureDeltas = {}
    if check.n_valid:
        # Empty without classes: the model gives no probabilities, so there is no confidence.
        confidence = probabilities.max(axis=1) if len(probabilities) else None
        if job.store_predictions:
            encoded = batch_rows.probabilities_json(probabilities, model.classes) if model.classes else None
            rows = batch_rows.rows_encode(
                job,
                row_indexes=(chunk.rows - 1)[check.valid],
                predictions=batch_rows.labels_json(labels),
                probabilities=encoded,
                warnings=check.warnings_json[check.valid],
                confidence=confidence,
                created_at=predicted_at,
            )
        feature_deltas = drift_rollups.prediction_features_binned(
            model_version=job.model_version,
            columns=check.columns,
            predictions=labels,
            confidences=confidence,
            hour=predicted_at,
        )
    attempt.timed("encode", started)
    return Computed(
        chunk=chunk,
        check=check,
        labels=labels,
        probabilities=probabilities,
        rows=rows,
        predicted_at=predicted_at,
        feature_deltas=feature_deltas,
    )


def chunk_read(job: BatchPredictionJob, index: int) -> batch_files.Chunk:
    """The rows of chunk `index`, as the job's first attempt stored them."""
    data = storage.read_bytes(batch_outputs.input_part_key(job, index))
    if data is None:
        raise BatchRunError(f"The rows of chunk {index} are missing from object storage.")
    return batch_files.chunk_decode(data)


def chunk_compute_ahead(
    model: Model, *, job: BatchPredictionJob, index: int
) -> tuple[Computed, dict[str, float]]:
    """Read, validate, predict and encode chunk `index` before it is claimed, on a thread beside the one
    storing the chunk before it; no database access. Its errors part is written (a replace: the same
    bytes if the chunk is computed again). Returns the computed chunk and its seconds per step."""
    times = StepSeconds()  # the chunk is not claimed yet: its attempt adds these seconds once it is
    started = time.perf_counter()
    chunk = chunk_read(job, index)
    times.timed("read", started)
    return chunk_compute(times, model, job=job, chunk=chunk), times.seconds


class JobNotRunning(BatchRunError):
    """The chunk's job was failed meanwhile (another chunk could not be predicted): the chunk is dropped."""


def chunk_store(attempt: ChunkAttempt, model: Model, *, job: BatchPredictionJob, computed: Computed) -> None:
    """Store a computed chunk's rows, mark it done, add its counts to the job and write its result part,
    all in one transaction.

    The chunk's fenced SUCCEEDED mark comes first: it locks the chunk's row, so an attempt that lost the
    chunk stores nothing, and the rows and counts of a chunk are stored once whichever worker stores it.
    The part is written inside the transaction on purpose: the prediction ids it lists exist only once
    the rows are inserted. The rows several workers add to (the request, the hourly rollups, the job) come
    last, always in the same order, so concurrent chunks wait on each other only briefly and never
    deadlock.
    """
    chunk, rows = computed.chunk, computed.rows
    failed = len(chunk) - computed.check.n_valid
    started = time.perf_counter()
    with batch_rows.checkpoints_spaced(), transaction.atomic():
        attempt.succeed(rows_done=len(chunk), rows_failed=failed, predicted_at=computed.predicted_at)
        if connection.vendor == "postgresql":
            # Check the rows' foreign keys as they are copied rather than at the commit: the commit comes
            # after the shared rows below are locked, and other workers would wait for those checks.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        ids = np.zeros(chunk.table.num_rows, dtype="int64")
        if rows is not None:
            last_id = batch_rows.rows_insert(rows)
            ids = batch_rows.ids_read(
                job, row_indexes=chunk.rows - 1, stored=computed.check.valid, last_id=last_id
            )
        started = attempt.timed("store", started)
        part = batch_outputs.result_part(
            chunk,
            computed.check,
            classes=model.classes,
            labels=computed.labels,
            probabilities=computed.probabilities,
            ids=ids,
        )
        batch_outputs.object_replace(batch_outputs.part_key(job, "result", chunk.index), io.BytesIO(part))
        started = attempt.timed("write", started)
        predicted = computed.check.n_valid
        if predicted:
            drift_rollups.feature_deltas_add(computed.feature_deltas)
            PredictionRequest.objects.filter(pk=job.prediction_request_id).update(
                n_rows=F("n_rows") + predicted
            )
            live_rollups.prediction_hours_add(
                model_version_id=job.model_version_id, hour=computed.predicted_at, rows=predicted
            )
        counted = BatchPredictionJob.objects.filter(
            pk=job.pk, status=BatchPredictionJob.Status.RUNNING
        ).update(
            chunks_done=F("chunks_done") + 1,
            rows_done=F("rows_done") + len(chunk),
            rows_failed=F("rows_failed") + failed,
        )
        if counted != 1:
            raise JobNotRunning(f"{job} is no longer running; chunk {chunk.index} is dropped.")
        started = attempt.timed("store", started)
        BatchPredictionChunk.objects.filter(pk=attempt.job.pk).update(timings=attempt.timings_rounded())
    # The commit (on SQLite, with the rows' deferred foreign key checks) is part of storing them.
    attempt.timed("store", started)
    prometheus.batch_rows_count(
        model=job.model_version.registered_model.name,
        version=job.model_version.version,
        predicted=predicted,
        refused=failed,
    )
