"""Writes for batch prediction jobs: submitting an upload, running it on the leased-job engine, failing it."""

from __future__ import annotations

import contextlib
import csv
import os
import time
import uuid
from datetime import datetime
from typing import IO, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F

from jobs import engine
from ml.csv_bytes import scan_bytes, seekable
from mlops_site import storage
from predictions import model_cache, selectors
from predictions.batch import checks as batch_checks
from predictions.batch import chunks as batch_chunks
from predictions.batch import files as batch_files
from predictions.batch import outputs as batch_outputs
from predictions.batch.attempt import BatchAttempt, BatchRunError
from predictions.errors import BatchUploadInvalid, InputInvalid
from predictions.models import BatchPredictionJob, Channel, PredictionRequest

# Every chunk renews the lease; a job RUNNING with an expired lease was left by a dead worker.
LEASE_SECONDS = 300
# A job claimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
# Jobs queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, OperationalError, InterfaceError)


def _enqueue(job_id: int) -> None:
    from predictions.tasks import batch_prediction_run_task

    batch_prediction_run_task.delay(job_id)


JOBS = engine.JobSpec(
    model=BatchPredictionJob,
    label="batch job",
    noun="job",
    # Looked up when called, so tests can send the jobs elsewhere by replacing _enqueue.
    enqueue=lambda job_id: _enqueue(job_id),
    lease_seconds=LEASE_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="predictions.tasks.batch_prediction_run_task",
    transient_errors=TRANSIENT_ERRORS,
    attempt_class=BatchAttempt,
    select_related=("model_version__registered_model",),
)


def chunk_rows() -> int:
    return settings.BATCH_CHUNK_ROWS


def max_upload_bytes() -> int:
    return settings.BATCH_MAX_UPLOAD_MB * 1024 * 1024


def batch_prediction_start(
    *,
    registered_model_name: str,
    input_file: IO[bytes],
    filename: str,
    requested_by: Any,
    version: int | None = None,
    stage: str | None = None,
) -> BatchPredictionJob:
    """Check the upload, store it and queue a job predicting it with the pinned version or the one in `stage`.

    `stage` defaults to production; giving both `version` and `stage` is refused.

    The version is resolved now, so the whole file is predicted by one version even if another is promoted
    meanwhile. The checks are cheap and streamed: size, UTF-8 text, a header naming every feature of the
    version (other columns are carried through), at least one data row. Raises BatchUploadInvalid (every
    problem found), ModelNotFound, NoVersionInStage or storage.StorageError; then nothing is stored.
    """
    try:
        stage = selectors.prediction_target_check(version=version, stage=stage)
    except InputInvalid as exc:
        raise BatchUploadInvalid(exc.errors) from exc
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
    input_key = batch_outputs.input_object_key(job_uuid)
    with seekable(input_file) as readable:
        scan = scan_bytes(readable, max_bytes=limit)
        if scan.problems:
            raise BatchUploadInvalid(scan.problems)
        try:
            header, has_rows = batch_files.records_head(readable)
        except csv.Error as exc:
            raise BatchUploadInvalid([f"The file could not be read as CSV: {exc}."]) from exc
        problems = batch_checks.header_problems(header, has_rows=has_rows, version=model_version)
        if problems:
            raise BatchUploadInvalid(problems)
        # Blank lines and line breaks inside quotes make this an upper bound; it is exact once done.
        rows_estimate = max(1, batch_checks.line_count(readable) - 1)
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
            # robust: a broker outage must not undo the accepted job; the stale sweep sends it later.
            transaction.on_commit(lambda: _enqueue(job.pk), robust=True)
    except BaseException:
        with contextlib.suppress(storage.StorageError):
            storage.delete(input_key)
        raise
    return job


def batch_prediction_run(*, job_id: int) -> engine.JobOutcome:
    """Claim the job, predict its file chunk by chunk, then assemble the result and errors files.

    Idempotent and crash-safe: the claim is a conditional UPDATE (see jobs.engine), so a duplicate
    message finds the job busy or finished. Each chunk's predictions are stored in one transaction that
    also advances the checkpoint (chunks_done, rows_done), and its parts are written under keys of their
    own (overwritten by a retry); a retry after a crash skips the committed chunks, so no row is predicted
    into the result or stored twice. Transient errors (storage or the database unreachable) hand the job
    back and are raised for the task to retry; anything else marks the job FAILED with the reason.
    """
    return engine.job_run(JOBS, job_id=job_id, work=_run, reason=_failure_reason)


def _failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, BatchRunError | batch_files.CsvReadError | model_cache.ModelUnavailable):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "The uploaded file is missing from object storage."
    return None


def _run(attempt: BatchAttempt) -> None:
    with batch_chunks.collector_paused():
        _chunks_run(attempt)


def _chunks_run(attempt: BatchAttempt) -> None:
    job = attempt.job
    started = time.perf_counter()
    model = batch_chunks.model_load(job.model_version)
    attempt.timed("load", started)
    attempt.renew(force=True)
    with storage.open_read(job.input_key) as handle:
        header, _ = batch_files.records_head(handle)
        handle.seek(0)
        chunks = batch_files.chunks_read(handle, header=header or [], chunk_rows=job.chunk_rows)
        writer = batch_chunks.store_thread(attempt, model, threaded=not connection.in_atomic_block)
        try:
            while True:
                started = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                if chunk.index >= attempt.chunks_done:
                    attempt.timed("read", started)
                    writer.submit(batch_chunks.chunk_compute(attempt, model, chunk=chunk))
        except BaseException:
            # Let the chunk in flight finish (or fail) before this attempt fails or hands the job back.
            with contextlib.suppress(Exception):
                writer.wait()
            raise
        writer.wait()
    _finish(attempt, model, header=header or [])


def _finish(attempt: BatchAttempt, model: batch_chunks.Model, *, header: list[str]) -> None:
    job = attempt.job
    started = time.perf_counter()
    parts = batch_outputs.files_assemble(attempt, header=header, classes=model.classes)
    attempt.timed("finish", started)
    with transaction.atomic():
        attempt.succeed(
            result_key=batch_outputs.result_key(job),
            errors_key=batch_outputs.errors_key(job),
            rows_total=F("rows_done"),
            timings=attempt.timings_rounded(),
        )
        model_seconds = attempt.timings.get("validate", 0.0) + attempt.timings.get("predict", 0.0)
        PredictionRequest.objects.filter(pk=job.prediction_request_id).update(latency_ms=model_seconds * 1000)
    batch_outputs.parts_delete(job, parts)


def batch_prediction_fail(*, job_id: int, message: str) -> bool:
    """Mark a job that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether the job was marked.
    """
    return engine.job_fail(JOBS, job_id=job_id, message=message)


def batch_prediction_jobs_stale_requeue(*, now: datetime | None = None) -> list[int]:
    """Send again jobs whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    A job whose worker died MAX_ATTEMPTS times is failed instead. Safe to run at any time: the worker's
    conditional claim ignores jobs another attempt holds.
    """
    return engine.jobs_stale_requeue(JOBS, now=now)
