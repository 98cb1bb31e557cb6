"""Writes for batch prediction jobs: submitting an upload, running it on the leased-job engine, failing it."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import time
import uuid
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from jobs import engine
from ml.csv_bytes import scan_bytes, seekable
from mlops_site import storage
from predictions import selectors
from predictions.batch import checks as batch_checks
from predictions.batch import chunk_runs, job_specs
from predictions.batch import chunks as batch_chunks
from predictions.batch import files as batch_files
from predictions.batch import finish as batch_finish
from predictions.batch import outputs as batch_outputs
from predictions.batch.attempt import BatchAttempt, BatchRunError
from predictions.errors import BatchUploadInvalid, InputInvalid
from predictions.models import BatchPredictionChunk, BatchPredictionJob, Channel, PredictionRequest

logger = logging.getLogger(__name__)


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
    store_predictions: bool = True,
) -> BatchPredictionJob:
    """Check the upload, store it and queue a job predicting it with the pinned version or the one in `stage`.

    `stage` defaults to production; giving both `version` and `stage` is refused. With
    `store_predictions=False` the result file is the only record of the rows: no Prediction row is stored
    for them, so they cannot get feedback or show in the history and the label queue; the job runs
    faster and the database does not grow with the file. Monitoring still counts them and bins their
    inputs for drift.

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
                store_predictions=store_predictions,
            )
            # robust: a broker outage must not undo the accepted job; the stale sweep sends it later.
            transaction.on_commit(lambda: job_specs.job_enqueue(job.pk), robust=True)
    except BaseException:
        with contextlib.suppress(storage.StorageError):
            storage.delete(input_key)
        raise
    return job


def batch_prediction_run(*, job_id: int) -> engine.JobOutcome:
    """Claim the job, cut its file into chunks, predict the chunks no other worker took, and finish it.

    The first attempt cuts the file: each chunk's rows are stored as an input part, then a chunk row is
    committed and its task sent, so every worker can take chunks while the file is still being cut. The
    attempt then works on the chunks nobody claimed, from the last one backwards (the chunk tasks go
    forwards). When no chunk is left to claim, it finishes the job if every chunk is stored; otherwise
    it hands its claim back and leaves the job waiting: the worker that stores the last chunk finishes it
    (finish.batch_prediction_finish).

    Idempotent and crash-safe: the claims are conditional UPDATEs (see jobs.engine), so a duplicate
    message finds the job busy or finished; a retry does not cut the chunks that exist again. Each chunk
    is stored in one transaction that marks it done and adds its counts to the job, so no row is
    predicted into the result or stored twice. Transient errors (storage or the database unreachable)
    hand the job back and are raised for the task to retry; anything else marks the job FAILED with the
    reason.
    """
    return engine.job_run(job_specs.JOBS, job_id=job_id, work=_run, reason=job_specs.failure_reason)


def _run(attempt: BatchAttempt) -> engine.JobOutcome | None:
    with batch_chunks.collector_paused():
        job = attempt.job
        started = time.perf_counter()
        model = batch_chunks.model_load(job.model_version)
        attempt.timed("load", started)
        attempt.renew(force=True)
        if job.chunks_total is None:
            _cut(attempt)
        # A chunk the job's attempts claimed and left running belongs to an attempt that is gone (this one
        # holds the job now): its lease ends, so this attempt redoes it at once.
        job_specs.chunk_leases_end(job.pk)
        outcome = chunk_runs.chunks_walk(
            job_specs.CHUNKS_IN_JOB, job=job, model=model, after=None, descending=True, renew=attempt.renew
        )
        if outcome is not None:
            raise BatchRunError(outcome.message)
        failed = BatchPredictionChunk.objects.filter(job_id=job.pk, status=BatchPredictionChunk.Status.FAILED)
        message = failed.values_list("error_message", flat=True).first()
        if message is not None:
            raise BatchRunError(message or "A chunk of the file failed.")
        # Chunks other workers still hold: hand the claim back (it was no crash) and wait for them, unless
        # the last of them was stored meanwhile. This UPDATE and each chunk's count lock the job's row, so
        # either the job waits before the last chunk is counted (and that chunk's worker finishes it) or
        # this attempt sees every chunk counted and finishes it.
        waiting = attempt.mine().filter(chunks_done__lt=F("chunks_total"))
        if waiting.update(
            waiting_for_chunks=True,
            attempts=F("attempts") - 1,
            lease_expires_at=timezone.now() + timedelta(seconds=job_specs.JOBS.lease_seconds),
            timings=attempt.timings_rounded(),
        ):
            return engine.JobOutcome("waiting", message="Other workers are predicting its last chunks.")
        batch_finish.job_finish(attempt, model)
    return None


def _cut(attempt: BatchAttempt) -> None:
    """Store each chunk's rows as an input part and commit its chunk row, sending its task on commit.

    A retry after a crash finds the chunks committed before it and only cuts the rest: a part is stored
    before its chunk row, so an existing row means a complete part.
    """
    job = attempt.job
    cut = set(BatchPredictionChunk.objects.filter(job_id=job.pk).values_list("index", flat=True))
    count = 0
    with storage.open_read(job.input_key) as handle:
        header, _ = batch_files.records_head(handle)
        handle.seek(0)
        chunks = batch_files.chunks_read(handle, header=header or [], chunk_rows=job.chunk_rows)
        while True:
            started = time.perf_counter()
            chunk = next(chunks, None)
            if chunk is None:
                break
            count += 1
            if chunk.index in cut:
                continue
            started = attempt.timed("read", started)
            attempt.check()
            batch_outputs.object_replace(
                batch_outputs.input_part_key(job, chunk.index), io.BytesIO(batch_files.chunk_encode(chunk))
            )
            attempt.timed("write", started)
            with transaction.atomic():
                unit, created = BatchPredictionChunk.objects.get_or_create(job_id=job.pk, index=chunk.index)
                if created:
                    # robust: a broker outage must not undo the chunk; the stale sweep sends it later.
                    transaction.on_commit(
                        lambda unit_id=unit.pk: job_specs.chunk_enqueue(unit_id), robust=True
                    )
            attempt.renew()
    attempt.write(chunks_total=count, timings=attempt.timings_rounded())
    job.chunks_total = count


def batch_prediction_fail(*, job_id: int, message: str) -> bool:
    """Mark a job that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether the job was marked.
    """
    return engine.job_fail(job_specs.JOBS, job_id=job_id, message=message)


def batch_chunk_fail(*, chunk_id: int, message: str) -> bool:
    """Mark a chunk that is not finished and not held by a live attempt FAILED (its task gave up), and
    its job with it. Returns whether the chunk was marked."""
    return engine.job_fail(job_specs.CHUNKS, job_id=chunk_id, message=message)


def batch_prediction_jobs_stale_requeue(*, now: datetime | None = None) -> list[int]:
    """Send again jobs and chunks whose message was lost: QUEUED for long, or RUNNING with an expired lease
    (a waiting job's lease runs out when no chunk was stored for that long: its attempt then works on
    the chunks left).

    A job or chunk whose worker died job_specs.MAX_ATTEMPTS times is failed instead (a chunk with its
    job). Safe to run at any time: the conditional claims ignore what another attempt holds. Returns the
    jobs' ids.
    """
    engine.jobs_stale_requeue(job_specs.CHUNKS, now=now)
    return engine.jobs_stale_requeue(job_specs.JOBS, now=now)
