"""Writes for batch prediction jobs: checking and storing an upload, and running it in chunks crash-safely."""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from datasets.csv_profile import scan_bytes, seekable
from ml.errors import PredictionInputError
from ml.pipeline import NUMERIC
from mlops_site import storage
from models_registry.models import ModelVersion, Stage
from predictions import model_cache, selectors
from predictions.batch import files as batch_files
from predictions.errors import BatchUploadInvalid
from predictions.models import BatchPredictionJob, Channel, Prediction, PredictionRequest
from predictions.validation import TableCheck, table_validate

logger = logging.getLogger(__name__)

# Every chunk renews the lease; a job RUNNING with an expired lease was left by a dead worker.
LEASE_SECONDS = 300
# A job reclaimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
# Jobs queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15
ERROR_MESSAGE_MAX_LENGTH = 4000
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, OperationalError, InterfaceError)

#: Columns the result file adds after the input columns (probability_<class> columns follow prediction).
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
TRAILING_COLUMNS = ("prediction_id", "row", "warnings")
ERRORS_COLUMNS = ("row", "field", "code", "message", "value")
#: Seconds summed over the chunks in BatchPredictionJob.timings. read, validate, predict and encode run on
#: the main thread, store (insert, commit) beside them on the store thread; write is both (errors parts
#: on the main thread, result parts on the store thread); wait is the main thread waiting for the store.
TIMED_STEPS = ("load", "read", "validate", "predict", "encode", "write", "store", "wait", "finish")


class LeaseLost(Exception):
    """Another attempt claimed the job after this attempt's lease ran out; this attempt must stop."""


class BatchRunError(Exception):
    """The job cannot finish for a reason no retry will change; the message says why."""


@dataclass(frozen=True)
class RunOutcome:
    """What one call of batch_prediction_run did.

    status: "succeeded", "failed", "skipped" (already finished or no such job), "busy" (another live
    attempt holds the lease; `retry_in` says when it expires) or "lost" (this attempt lost its lease).
    """

    status: str
    retry_in: int | None = None
    message: str = ""


def chunk_rows() -> int:
    return settings.BATCH_CHUNK_ROWS


def max_upload_bytes() -> int:
    return settings.BATCH_MAX_UPLOAD_MB * 1024 * 1024


def input_object_key(job_uuid: uuid.UUID) -> str:
    return f"batch/{job_uuid}/input.csv"


def _part_key(job: BatchPredictionJob, kind: str, index: int) -> str:
    return f"batch/{job.uuid}/parts/{kind}-{index:06d}.csv"


def output_columns(*, classes: list[Any] | None) -> list[str]:
    """The columns the result file adds, for a model with these classes (None: no probabilities)."""
    probabilities = [f"{PROBABILITY_PREFIX}{c}" for c in classes] if classes else []
    return [PREDICTION_COLUMN, *probabilities, *TRAILING_COLUMNS]


# ------------------------------------------------------------------------------
# Submitting a job
# ------------------------------------------------------------------------------
def _options_check(*, version: Any, stage: Any) -> None:
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise BatchUploadInvalid([f"'version' must be a version number (1, 2, ...); got {version!r}."])
    if version is None and stage not in selectors.SERVABLE_STAGES:
        raise BatchUploadInvalid(
            [f"'stage' must be one of: {', '.join(selectors.SERVABLE_STAGES)}; got {stage!r}."]
        )


def _line_count(file: IO[bytes]) -> int:
    file.seek(0)
    count, last = 0, b""
    while block := file.read(1024 * 1024):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (1 if last and last != b"\n" else 0)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _number_like(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_problems(header: list[str] | None, *, has_rows: bool, version: ModelVersion) -> list[str]:
    if header is None:
        return ["The file is empty: it has no header row and no data."]
    if all(not name.strip() or _number_like(name) for name in header):
        return [
            "The first row does not look like a header: every field is a number or blank. "
            "Add a header row with the column names."
        ]
    problems: list[str] = []
    blank = [str(position + 1) for position, name in enumerate(header) if not name.strip()]
    if blank:
        problems.append(f"Column {', '.join(blank)} has no name in the header row; every column needs one.")
    seen: set[str] = set()
    duplicates = sorted({name for name in header if name in seen or seen.add(name)})
    if duplicates:
        problems.append(f"Column names must be unique; these appear more than once: {_names(duplicates)}.")
    if len(header) == 1:
        for separator, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if separator in header[0]:
                problems.append(
                    f"The file seems to separate fields with {label}; "
                    "only comma-separated files are accepted."
                )
                break
    features = [c["name"] for c in version.feature_schema]
    missing = [name for name in features if name not in seen]
    if missing:
        problems.append(
            f"The file lacks {len(missing)} feature column{'s' if len(missing) != 1 else ''} of "
            f"{version.registered_model.name} v{version.version}: {_names(missing)}. The header must name "
            f"every feature: {_names(features)}. Other columns are allowed and copied to the result."
        )
    taken = [name for name in output_columns(classes=version.classes) if name in seen]
    if taken:
        problems.append(
            f"The file already has column{'s' if len(taken) != 1 else ''} named {_names(taken)}, which the "
            "result adds with the predictions. Rename or remove them."
        )
    if not has_rows:
        problems.append("The file has a header row but no data rows.")
    return problems


def batch_prediction_start(
    *,
    registered_model_name: str,
    input_file: IO[bytes],
    filename: str,
    requested_by: Any,
    version: int | None = None,
    stage: str = Stage.PRODUCTION,
) -> BatchPredictionJob:
    """Check the upload, store it and queue a job predicting it with the pinned version or the one in `stage`.

    The version is resolved now, so the whole file is predicted by one version even if another is promoted
    meanwhile. The checks are cheap and streamed: size, UTF-8 text, a header naming every feature of the
    version (other columns are carried through), at least one data row. Raises BatchUploadInvalid (every
    problem found), ModelNotFound, NoVersionInStage or storage.StorageError; then nothing is stored.
    """
    _options_check(version=version, stage=stage)
    model_version = selectors.model_version_resolve(
        registered_model_name=registered_model_name, version=version, stage=stage
    )
    limit = max_upload_bytes()
    size = getattr(input_file, "size", None)
    if isinstance(size, int) and size > limit:
        raise BatchUploadInvalid(
            [f"The file is {size / 1024 / 1024:.1f} MB; at most {limit // (1024 * 1024)} MB are accepted."]
        )
    job_uuid = uuid.uuid4()
    input_key = input_object_key(job_uuid)
    with seekable(input_file) as readable:
        scan = scan_bytes(readable, max_bytes=limit)
        if scan.problems:
            raise BatchUploadInvalid(scan.problems)
        try:
            header, has_rows = batch_files.records_head(readable)
        except csv.Error as exc:
            raise BatchUploadInvalid([f"The file could not be read as CSV: {exc}."]) from exc
        problems = _header_problems(header, has_rows=has_rows, version=model_version)
        if problems:
            raise BatchUploadInvalid(problems)
        # Blank lines and line breaks inside quotes make this an upper bound; it is exact once done.
        rows_estimate = max(1, _line_count(readable) - 1)
        readable.seek(0)
        storage.put(input_key, readable)
    try:
        with transaction.atomic():
            request = PredictionRequest.objects.create(
                request_id=f"batch-{job_uuid.hex}",
                user=requested_by,
                channel=Channel.BATCH,
                model_version=model_version,
                stage="" if version is not None else stage,
                n_rows=0,
                latency_ms=0.0,
            )
            job = BatchPredictionJob.objects.create(
                uuid=job_uuid,
                user=requested_by,
                registered_model=model_version.registered_model,
                model_version=model_version,
                stage="" if version is not None else stage,
                prediction_request=request,
                input_key=input_key,
                original_filename=os.path.basename(filename or "")[:255],
                input_size_bytes=scan.size_bytes,
                chunk_rows=chunk_rows(),
                rows_total=rows_estimate,
            )
            transaction.on_commit(lambda: _enqueue(job.pk))
    except BaseException:
        with contextlib.suppress(storage.StorageError):
            storage.delete(input_key)
        raise
    return job


def _enqueue(job_id: int) -> None:
    from predictions.tasks import batch_prediction_run_task

    batch_prediction_run_task.delay(job_id)


def batch_prediction_jobs_stale_requeue(*, now: Any = None) -> list[int]:
    """Send again jobs whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    Safe to run at any time: the worker's conditional claim ignores jobs another attempt holds.
    """
    now = now or timezone.now()
    stale = BatchPredictionJob.objects.filter(
        Q(
            status=BatchPredictionJob.Status.QUEUED,
            created_at__lt=now - timedelta(minutes=STALE_QUEUED_MINUTES),
        )
        | Q(status=BatchPredictionJob.Status.RUNNING, lease_expires_at__lt=now)
    )
    job_ids = list(stale.values_list("pk", flat=True))
    for job_id in job_ids:
        _enqueue(job_id)
    return job_ids


# ------------------------------------------------------------------------------
# Claiming and the lease
# ------------------------------------------------------------------------------
def _claim(*, job_id: int) -> tuple[BatchPredictionJob | None, RunOutcome | None]:
    now = timezone.now()
    status = BatchPredictionJob.Status
    claimable = (
        Q(status=status.QUEUED)
        | Q(status=status.RUNNING, lease_expires_at__lt=now)
        | Q(status=status.RUNNING, lease_expires_at__isnull=True)
    )
    claimed = (
        BatchPredictionJob.objects.filter(claimable, pk=job_id).update(
            status=status.RUNNING,
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now),
        )
        == 1
    )
    job = (
        BatchPredictionJob.objects.select_related("model_version__registered_model").filter(pk=job_id).first()
    )
    if job is None:
        return None, RunOutcome("skipped", message=f"There is no batch job {job_id}.")
    if claimed:
        return job, None
    if job.is_terminal:
        return None, RunOutcome("skipped", message=f"Batch job {job_id} already {job.status}.")
    remaining = (job.lease_expires_at - now).total_seconds() if job.lease_expires_at else 0
    return None, RunOutcome(
        "busy", retry_in=max(5, int(remaining) + 5), message="Another attempt holds the job."
    )


class _Attempt:
    """One claimed attempt: its writes are fenced by the attempt number it claimed the job with."""

    def __init__(self, job: BatchPredictionJob) -> None:
        self.job = job
        self.token = job.attempts
        self.chunks_done = job.chunks_done
        # Both threads add to these (see TIMED_STEPS), and the store thread saves them at each checkpoint.
        self._timings_lock = threading.Lock()
        self.timings: dict[str, float] = dict.fromkeys(TIMED_STEPS, 0.0)
        self.timings.update({k: float(v) for k, v in (job.timings or {}).items()})

    def mine(self) -> Any:
        return BatchPredictionJob.objects.filter(
            pk=self.job.pk, status=BatchPredictionJob.Status.RUNNING, attempts=self.token
        )

    def timed(self, step: str, started: float) -> float:
        now = time.perf_counter()
        with self._timings_lock:
            self.timings[step] = self.timings.get(step, 0.0) + (now - started)
        return now

    def timings_rounded(self) -> dict[str, float]:
        with self._timings_lock:
            return {k: round(v, 4) for k, v in self.timings.items()}

    def renew(self) -> None:
        if self.mine().update(lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS)) != 1:
            raise LeaseLost(f"batch job {self.job.pk}: attempt {self.token} lost its lease")

    def checkpoint(self, *, index: int, rows: int, failed: int) -> None:
        """Count chunk `index` done, in the transaction that stores its rows (this UPDATE locks the job)."""
        updated = (
            self.mine()
            .filter(chunks_done=index)
            .update(
                chunks_done=index + 1,
                rows_done=F("rows_done") + rows,
                rows_failed=F("rows_failed") + failed,
                lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS),
                timings=self.timings_rounded(),
            )
        )
        if updated != 1:
            raise LeaseLost(f"batch job {self.job.pk}: attempt {self.token} lost its lease")
        self.chunks_done = index + 1


# ------------------------------------------------------------------------------
# Running a job
# ------------------------------------------------------------------------------
def batch_prediction_run(*, job_id: int) -> RunOutcome:
    """Claim the job, predict its file chunk by chunk, then assemble the result and errors files.

    Idempotent and crash-safe: the claim is a conditional UPDATE (QUEUED, or RUNNING with an expired
    lease), so a duplicate message finds the job busy or finished. Each chunk's predictions are stored
    in one transaction that also advances the checkpoint (chunks_done, rows_done), and its parts are
    written under keys of their own (overwritten by a retry); a retry after a crash skips the committed
    chunks, so no row is predicted into the result or stored twice. Transient errors (storage or the
    database unreachable) hand the job back and are raised for the task to retry; anything else marks
    the job FAILED with the reason.
    """
    job, outcome = _claim(job_id=job_id)
    if outcome is not None:
        return outcome
    assert job is not None
    attempt = _Attempt(job)
    if job.attempts > MAX_ATTEMPTS:
        return _fail(
            attempt,
            f"The job was interrupted {job.attempts - 1} times (the worker stopped or ran out of memory) "
            "and was given up.",
        )
    try:
        _run(attempt)
    except LeaseLost:
        logger.warning("batch job %s: attempt %s lost its lease; stopping", job_id, attempt.token)
        return RunOutcome("lost", message="Another attempt took over the job.")
    except TRANSIENT_ERRORS as exc:
        logger.warning("batch job %s: transient failure, will retry: %s", job_id, exc)
        _release(attempt)
        raise
    except (BatchRunError, batch_files.CsvReadError, model_cache.ModelUnavailable) as exc:
        return _fail(attempt, str(exc))
    except FileNotFoundError:
        return _fail(attempt, "The uploaded file is missing from object storage.")
    except Exception as exc:
        logger.exception("batch job %s failed unexpectedly", job_id)
        return _fail(attempt, f"Unexpected error ({type(exc).__name__}): {exc}")
    return RunOutcome("succeeded")


@dataclass(frozen=True)
class _Model:
    predictor: model_cache.Predictor
    feature_schema: list[dict[str, Any]]
    # Set when the model gives probabilities: the column names after "probability_".
    classes: list[str] | None

    @property
    def probability_columns(self) -> list[str]:
        return [f"{PROBABILITY_PREFIX}{c}" for c in self.classes or []]


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


def _model_load(version: ModelVersion) -> _Model:
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
    return _Model(predictor=predictor, feature_schema=version.feature_schema, classes=classes)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
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


def _run(attempt: _Attempt) -> None:
    with _collector_paused():
        _chunks_run(attempt)


def _chunks_run(attempt: _Attempt) -> None:
    job = attempt.job
    started = time.perf_counter()
    model = _model_load(job.model_version)
    attempt.timed("load", started)
    attempt.renew()
    with storage.open_read(job.input_key) as handle:
        header, _ = batch_files.records_head(handle)
        handle.seek(0)
        chunks = batch_files.chunks_read(handle, header=header or [], chunk_rows=job.chunk_rows)
        writer = _Writer(attempt, model, threaded=not connection.in_atomic_block)
        try:
            while True:
                started = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                if chunk.index >= attempt.chunks_done:
                    attempt.timed("read", started)
                    writer.submit(_chunk_compute(attempt, model, chunk=chunk))
        except BaseException:
            # Let the chunk in flight finish (or fail) before this attempt fails or hands the job back.
            with contextlib.suppress(Exception):
                writer.wait()
            raise
        writer.wait()
    _finish(attempt, model, header=header or [])


def _labels_json(labels: list[Any]) -> np.ndarray:
    values = np.asarray(labels)
    if values.dtype.kind == "f":
        # Regression: numpy writes the shortest repr of each float, which is also its JSON.
        return values.astype(str).astype(object)
    unique = {value: json.dumps(value) for value in set(labels)}
    return np.array([unique[value] for value in labels], dtype=object)


def _probabilities_json(probabilities: np.ndarray, classes: list[str]) -> np.ndarray:
    text = pd.DataFrame(probabilities, columns=classes).to_json(
        orient="records", lines=True, double_precision=15
    )
    return np.array(text.rstrip("\n").split("\n"), dtype=object)


@dataclass(frozen=True)
class _Rows:
    """One chunk's Prediction rows, encoded for one statement of the database at hand."""

    count: int
    # "copy" (PostgreSQL), "execute" (SQLite: one INSERT … SELECT over json_each) or "executemany".
    method: str
    sql: str
    params: Any


# Constant columns first: a row is then one constant part plus its own values.
_CONSTANT_COLUMNS = (
    "request_id",
    "user_id",
    "model_version_id",
    "channel",
    "batch_job_id",
    "inputs",
    "created_at",
)
_ROW_COLUMNS = ("row_index", "prediction", "probabilities", "warnings")


def _copy_escaped(values: np.ndarray) -> np.ndarray:
    """JSON texts escaped for COPY's text format, where only the backslash needs doubling here."""
    joined = "\n".join(values)  # encoded JSON holds no raw line break
    if "\\" not in joined:
        return values
    return np.array(joined.replace("\\", "\\\\").split("\n"), dtype=object)


def _sqlite_json_arrows() -> bool:
    # The -> and ->> operators arrived in SQLite 3.38 (2022); older libraries get executemany.
    return connection.Database.sqlite_version_info >= (3, 38, 0)


def _rows_encode(
    job: BatchPredictionJob,
    *,
    row_indexes: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None,
    warnings: np.ndarray,
) -> _Rows:
    """Encode one chunk's rows (JSON values already encoded, column-wise) for a single statement.

    bulk_create would build a model instance and encode four JSON values per row in Python, several
    times slower. PostgreSQL gets one COPY, SQLite one INSERT … SELECT that unpacks a JSON array in C;
    both statements then run without the GIL, beside the main thread's work on the next chunk.
    """
    table = connection.ops.quote_name(Prediction._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in (*_CONSTANT_COLUMNS, *_ROW_COLUMNS))
    now = timezone.now()
    constants = [job.prediction_request_id, job.user_id, job.model_version_id, Channel.BATCH.value, job.pk]
    count = len(row_indexes)
    rows_text = row_indexes.astype(str).astype(object)
    if connection.vendor == "postgresql":
        prefix = "\t".join("\\N" if v is None else str(v) for v in constants)
        prefix += "\t{}\t" + now.isoformat() + "\t"
        column = _copy_escaped(probabilities) if probabilities is not None else np.array("\\N")
        lines = (
            prefix
            + rows_text
            + "\t"
            + _copy_escaped(predictions)
            + "\t"
            + column
            + "\t"
            + _copy_escaped(warnings)
        )
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        return _Rows(count=count, method="copy", sql=f"COPY {table} ({names}) FROM STDIN", params=payload)
    created_at = connection.ops.adapt_datetimefield_value(now)
    if connection.vendor == "sqlite" and _sqlite_json_arrows():
        column = probabilities if probabilities is not None else np.array("null")
        items = "[" + rows_text + "," + predictions + "," + column + "," + warnings + "]"
        sql = (
            f"INSERT INTO {table} ({names}) SELECT %s, %s, %s, %s, %s, %s, %s, "  # noqa: S608
            "j.value ->> 0, j.value -> 1, NULLIF(j.value -> 2, 'null'), j.value -> 3 FROM json_each(%s) AS j"
        )
        return _Rows(
            count=count,
            method="execute",
            sql=sql,
            params=[*constants, "{}", created_at, "[" + ",".join(items) + "]"],
        )
    placeholders = ", ".join(["%s"] * (len(_CONSTANT_COLUMNS) + len(_ROW_COLUMNS)))
    values = list(
        zip(
            *([value] * count for value in [*constants, "{}", created_at]),
            row_indexes.tolist(),
            predictions.tolist(),
            probabilities.tolist() if probabilities is not None else [None] * count,
            warnings.tolist(),
            strict=True,
        )
    )
    return _Rows(
        count=count,
        method="executemany",
        sql=f"INSERT INTO {table} ({names}) VALUES ({placeholders})",  # noqa: S608
        params=values,
    )


def _rows_insert(rows: _Rows) -> None:
    with connection.cursor() as cursor:
        if rows.method == "copy":
            with cursor.cursor.copy(rows.sql) as copy:  # type: ignore[attr-defined]
                copy.write(rows.params)
        elif rows.method == "execute":
            cursor.execute(rows.sql, rows.params)
        else:
            cursor.executemany(rows.sql, rows.params)


def _ids_read(job: BatchPredictionJob, *, row_indexes: np.ndarray) -> np.ndarray:
    """Prediction ids of the chunk's rows, aligned with row_indexes (0 where no row was stored)."""
    table = connection.ops.quote_name(Prediction._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT row_index, id FROM {table} "  # noqa: S608
            "WHERE batch_job_id = %s AND row_index >= %s AND row_index <= %s",
            [job.pk, int(row_indexes[0]), int(row_indexes[-1])],
        )
        found = np.array(cursor.fetchall(), dtype="int64").reshape(-1, 2)
    ids = np.zeros(len(row_indexes), dtype="int64")
    ids[np.searchsorted(row_indexes, found[:, 0])] = found[:, 1]
    return ids


def _object_replace(key: str, content: IO[bytes]) -> None:
    """Store content under exactly `key`, replacing what an earlier attempt stored there."""
    if storage.exists(key):
        storage.delete(key)
    storage.put(key, content)


def _errors_part(chunk: batch_files.Chunk, check: TableCheck) -> bytes:
    errors = check.errors
    width = chunk.table.num_columns
    ragged = chunk.ragged
    row = np.concatenate([chunk.rows[errors["position"]], np.array([r.row for r in ragged], dtype="int64")])
    messages = [
        f"Row {r.row} has {r.fields} field{'s' if r.fields != 1 else ''}; the header has {width}. "
        "Quote values that hold commas."
        for r in ragged
    ]
    columns = {
        "field": [errors["field"], np.full(len(ragged), "", dtype=object)],
        "code": [errors["code"], np.full(len(ragged), batch_files.WRONG_FIELD_COUNT, dtype=object)],
        "message": [errors["message"], np.array(messages, dtype=object)],
        "value": [errors["value"], np.array([r.text for r in ragged], dtype=object)],
    }
    order = np.argsort(row, kind="stable")
    table = pa.table(
        {
            "row": pa.array(row[order], pa.int64()),
            **{name: pa.array(np.concatenate(parts)[order], pa.string()) for name, parts in columns.items()},
        }
    )
    return batch_files.csv_part(table)


def _result_part(
    chunk: batch_files.Chunk,
    check: TableCheck,
    model: _Model,
    *,
    labels: list[Any],
    probabilities: np.ndarray,
    ids: np.ndarray,
) -> bytes:
    """The chunk's rows as read, then prediction, probability_<class>…, prediction_id, row, warnings."""
    n = chunk.table.num_rows
    valid = check.valid
    columns: dict[str, Any] = dict(zip(chunk.table.column_names, chunk.table.columns, strict=True))
    predicted = np.full(n, None, dtype=object)
    if len(labels):
        predicted[valid] = labels
    columns[PREDICTION_COLUMN] = pa.array(predicted, from_pandas=True)
    for position, name in enumerate(model.probability_columns):
        column = np.full(n, np.nan)
        if len(probabilities):
            column[valid] = probabilities[:, position]
        columns[name] = pa.array(column, mask=~valid)
    columns["prediction_id"] = pa.array(ids, mask=ids == 0)
    columns["row"] = pa.array(chunk.rows)
    columns["warnings"] = pa.array(check.warnings_text, pa.string())
    return batch_files.csv_part(pa.table(columns))


@dataclass
class _Computed:
    """A chunk checked and predicted, waiting to be stored."""

    chunk: batch_files.Chunk
    check: TableCheck
    labels: list[Any]
    probabilities: np.ndarray
    rows: _Rows | None


def _chunk_compute(attempt: _Attempt, model: _Model, *, chunk: batch_files.Chunk) -> _Computed:
    """Validate and predict a chunk, write its errors part, and encode its rows for the database."""
    job = attempt.job
    started = time.perf_counter()
    check = table_validate(table=chunk.table, feature_schema=model.feature_schema)
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
    started = attempt.timed("predict", started)
    if check.n_errors or chunk.ragged:
        _object_replace(_part_key(job, "errors", chunk.index), io.BytesIO(_errors_part(chunk, check)))
    started = attempt.timed("write", started)
    rows = None
    if check.n_valid:
        rows = _rows_encode(
            job,
            row_indexes=(chunk.rows - 1)[check.valid],
            predictions=_labels_json(labels),
            probabilities=_probabilities_json(probabilities, model.classes) if model.classes else None,
            warnings=check.warnings_json[check.valid],
        )
    attempt.timed("encode", started)
    return _Computed(chunk=chunk, check=check, labels=labels, probabilities=probabilities, rows=rows)


def _chunk_store(attempt: _Attempt, model: _Model, computed: _Computed) -> None:
    """Store a computed chunk's rows, advance the checkpoint and write its result part, in one transaction.

    The part is written inside the transaction on purpose: the prediction ids it lists exist only once
    the rows are inserted, and a part written after the commit could be lost to a crash with the
    checkpoint already past it. The checkpoint's UPDATE comes first and locks the job row, so no other
    attempt can claim the job (and write this part) until this transaction ends.
    """
    job, chunk, rows = attempt.job, computed.chunk, computed.rows
    started = time.perf_counter()
    with transaction.atomic():
        attempt.checkpoint(index=chunk.index, rows=len(chunk), failed=len(chunk) - computed.check.n_valid)
        ids = np.zeros(chunk.table.num_rows, dtype="int64")
        if rows is not None:
            _rows_insert(rows)
            PredictionRequest.objects.filter(pk=job.prediction_request_id).update(
                n_rows=F("n_rows") + rows.count
            )
            ids = _ids_read(job, row_indexes=chunk.rows - 1)
        started = attempt.timed("store", started)
        part = _result_part(
            chunk,
            computed.check,
            model,
            labels=computed.labels,
            probabilities=computed.probabilities,
            ids=ids,
        )
        _object_replace(_part_key(job, "result", chunk.index), io.BytesIO(part))
        started = attempt.timed("write", started)
    # The commit checks the rows' foreign keys (deferred constraints): part of storing them.
    attempt.timed("store", started)


class _Writer:
    """Stores computed chunks one at a time, in order, while the main thread computes the next one.

    The database (a PostgreSQL server, or SQLite's C code, which releases the GIL) then works in parallel
    with reading, validating and predicting: a worker on two cores keeps both busy. At most one chunk is
    in flight, so memory holds two chunks. Without a thread of its own (`threaded=False`, used when the
    caller holds a transaction that a second connection could not see into) it stores at once.
    """

    def __init__(self, attempt: _Attempt, model: _Model, *, threaded: bool) -> None:
        self.attempt = attempt
        self.model = model
        self.threaded = threaded
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, computed: _Computed) -> None:
        self.wait()
        if not self.threaded:
            _chunk_store(self.attempt, self.model, computed)
            return
        self._thread = threading.Thread(
            target=self._store, args=(computed,), name=f"batch-job-{self.attempt.job.pk}-store", daemon=True
        )
        self._thread.start()

    def _store(self, computed: _Computed) -> None:
        try:
            _chunk_store(self.attempt, self.model, computed)
        except BaseException as exc:  # handed to the main thread by wait()
            self._error = exc
        finally:
            connection.close()

    def wait(self) -> None:
        """Block until the chunk in flight is stored; raise what storing it raised."""
        if self._thread is not None:
            started = time.perf_counter()
            self._thread.join()
            self._thread = None
            self.attempt.timed("wait", started)
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _concatenate(attempt: _Attempt, *, key: str, header: bytes, parts: list[str]) -> None:
    """Header plus parts, in order, streamed through a temporary file (memory stays flat) into `key`."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as out:
        out.write(header)
        for part in parts:
            for block in storage.iter_chunks(part):
                out.write(block)
            attempt.renew()
        out.seek(0)
        _object_replace(key, out)  # type: ignore[arg-type]


def _finish(attempt: _Attempt, model: _Model, *, header: list[str]) -> None:
    job = attempt.job
    started = time.perf_counter()
    chunks = attempt.chunks_done
    result_key = f"batch/{job.uuid}/result.csv"
    errors_key = f"batch/{job.uuid}/errors.csv"
    result_parts = [_part_key(job, "result", i) for i in range(chunks)]
    _concatenate(
        attempt,
        key=result_key,
        header=batch_files.header_line([*header, *output_columns(classes=model.classes)]),
        parts=result_parts,
    )
    error_parts = [key for key in (_part_key(job, "errors", i) for i in range(chunks)) if storage.exists(key)]
    _concatenate(
        attempt, key=errors_key, header=batch_files.header_line(list(ERRORS_COLUMNS)), parts=error_parts
    )
    attempt.timed("finish", started)
    with transaction.atomic():
        finished = attempt.mine().update(
            status=BatchPredictionJob.Status.SUCCEEDED,
            result_key=result_key,
            errors_key=errors_key,
            rows_total=F("rows_done"),
            error_message="",
            finished_at=timezone.now(),
            lease_expires_at=None,
            timings=attempt.timings_rounded(),
        )
        if finished != 1:
            raise LeaseLost(f"batch job {job.pk}: attempt {attempt.token} lost its lease")
        model_seconds = attempt.timings.get("validate", 0.0) + attempt.timings.get("predict", 0.0)
        PredictionRequest.objects.filter(pk=job.prediction_request_id).update(latency_ms=model_seconds * 1000)
    for key in result_parts + error_parts:
        try:
            storage.delete(key)
        except storage.StorageError:
            logger.warning("batch job %s: could not delete part %s", job.pk, key, exc_info=True)


# ------------------------------------------------------------------------------
# Failure: release, fail
# ------------------------------------------------------------------------------
def _release(attempt: _Attempt) -> None:
    """Hand the job back for the task's retry: the lease ends now and the attempt is not counted.

    `attempts` thus counts claims that ended without a hand-back (crashes) plus the current one, which
    is what MAX_ATTEMPTS limits; the number stays unique among live attempts, as the fence needs.
    """
    with contextlib.suppress(DatabaseError):
        attempt.mine().update(
            lease_expires_at=timezone.now(), attempts=F("attempts") - 1, timings=attempt.timings_rounded()
        )


def _fail(attempt: _Attempt, message: str) -> RunOutcome:
    message = message[:ERROR_MESSAGE_MAX_LENGTH]
    marked = attempt.mine().update(
        status=BatchPredictionJob.Status.FAILED,
        error_message=message,
        finished_at=timezone.now(),
        lease_expires_at=None,
        timings=attempt.timings_rounded(),
    )
    if not marked:
        logger.warning(
            "batch job %s: attempt %s failed after losing its lease: %s",
            attempt.job.pk,
            attempt.token,
            message,
        )
        return RunOutcome("lost", message="Another attempt took over the job.")
    logger.info("batch job %s failed: %s", attempt.job.pk, message)
    return RunOutcome("failed", message=message)


def batch_prediction_fail(*, job_id: int, message: str) -> bool:
    """Mark a job that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether the job was marked.
    """
    now = timezone.now()
    not_held = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    marked = BatchPredictionJob.objects.filter(
        not_held,
        pk=job_id,
        status__in=[BatchPredictionJob.Status.QUEUED, BatchPredictionJob.Status.RUNNING],
    ).update(
        status=BatchPredictionJob.Status.FAILED,
        error_message=message[:ERROR_MESSAGE_MAX_LENGTH],
        finished_at=now,
        lease_expires_at=None,
    )
    return marked == 1
