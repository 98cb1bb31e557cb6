"""Writes for batch prediction jobs: submitting an upload, running it on the leased-job engine, failing it."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import engine
from ml.csv_bytes import scan_bytes, seekable
from mlops_site import storage
from predictions import model_cache, selectors
from predictions.batch import checks as batch_checks
from predictions.batch import chunks as batch_chunks
from predictions.batch import files as batch_files
from predictions.batch import finish as batch_finish
from predictions.batch import outputs as batch_outputs
from predictions.batch.attempt import BatchAttempt, BatchRunError, ChunkAttempt
from predictions.errors import BatchUploadInvalid, InputInvalid
from predictions.models import BatchPredictionChunk, BatchPredictionJob, Channel, PredictionRequest

logger = logging.getLogger(__name__)

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


def _enqueue_chunk(chunk_id: int) -> None:
    from predictions.tasks import batch_chunk_run_task

    batch_chunk_run_task.delay(chunk_id)


def _chunk_leases_end(job_id: int) -> None:
    """The job's attempt is gone (its worker process died, or another attempt claimed the job): end the
    lease of the chunk it was predicting too."""
    BatchPredictionChunk.objects.filter(
        job_id=job_id,
        status=BatchPredictionChunk.Status.RUNNING,
        claimed_by_job=True,
        lease_expires_at__gt=timezone.now(),
    ).update(lease_expires_at=timezone.now())


def _walk_leases_end(chunk_id: int) -> None:
    """The worker process running this chunk's task died: end the leases of the chunks it went on to
    claim (_chunks_after) and send their tasks, so another worker takes them at once."""
    now = timezone.now()
    held = BatchPredictionChunk.objects.filter(
        walked_from=chunk_id, status=BatchPredictionChunk.Status.RUNNING, lease_expires_at__gt=now
    )
    ended = list(held.values_list("pk", flat=True))
    if not ended:
        return
    BatchPredictionChunk.objects.filter(pk__in=ended, walked_from=chunk_id).update(lease_expires_at=now)
    logger.warning(
        "batch chunk %s: its worker process died holding chunks %s; sending them again", chunk_id, ended
    )
    for held_id in ended:
        _enqueue_chunk(held_id)


def _job_fail_for_chunk(chunk: BatchPredictionChunk) -> None:
    """A chunk was failed (it cannot be predicted, or its worker kept dying): its job fails with it.

    Only a job no live attempt of its own holds is marked: one that is waiting for its chunks, or whose
    lease ran out. An attempt working on the job fails it itself when it meets the failed chunk.
    """
    failed = BatchPredictionChunk.objects.filter(pk=chunk.pk).values_list("error_message", flat=True).first()
    now = timezone.now()
    BatchPredictionJob.objects.filter(
        Q(waiting_for_chunks=True) | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now),
        pk=chunk.job_id,
        status__in=[BatchPredictionJob.Status.QUEUED, BatchPredictionJob.Status.RUNNING],
    ).update(
        status=BatchPredictionJob.Status.FAILED,
        error_message=(failed or engine.interrupted_message(CHUNKS, MAX_ATTEMPTS))[
            : engine.ERROR_MESSAGE_MAX_LENGTH
        ],
        finished_at=now,
        lease_expires_at=None,
        waiting_for_chunks=False,
    )


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
    # A claim by any attempt (the stale sweep's, a retry's) works on the job itself, not waiting.
    claimed_fields={"waiting_for_chunks": False},
    failed_fields={"waiting_for_chunks": False},
    lease_ended=_chunk_leases_end,
)

# A chunk claimed by its own task, on any worker.
CHUNKS = engine.JobSpec(
    model=BatchPredictionChunk,
    label="batch chunk",
    noun="chunk",
    enqueue=lambda chunk_id: _enqueue_chunk(chunk_id),
    lease_seconds=LEASE_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="predictions.tasks.batch_chunk_run_task",
    transient_errors=TRANSIENT_ERRORS,
    attempt_class=ChunkAttempt,
    select_related=("job__model_version__registered_model",),
    claimed_fields={"claimed_by_job": False, "walked_from": None},
    abandon=_job_fail_for_chunk,
    held_along=lambda chunk_id: _walk_leases_end(chunk_id),
)
# A chunk claimed by its job's own attempt, which works on the chunks no other worker has taken.
CHUNKS_IN_JOB = dataclasses.replace(
    CHUNKS, task_name="", claimed_fields={"claimed_by_job": True, "walked_from": None}
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
            transaction.on_commit(lambda: _enqueue(job.pk), robust=True)
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
    (batch_prediction_finish).

    Idempotent and crash-safe: the claims are conditional UPDATEs (see jobs.engine), so a duplicate
    message finds the job busy or finished; a retry does not cut the chunks that exist again. Each chunk
    is stored in one transaction that marks it done and adds its counts to the job, so no row is
    predicted into the result or stored twice. Transient errors (storage or the database unreachable)
    hand the job back and are raised for the task to retry; anything else marks the job FAILED with the
    reason.
    """
    return engine.job_run(JOBS, job_id=job_id, work=_run, reason=_failure_reason)


def batch_chunk_run(*, chunk_id: int) -> engine.JobOutcome:
    """Claim one chunk of a batch job and predict it, then the free chunks after it (_chunks_after); the
    worker storing the job's last chunk finishes the job.

    Idempotent: a chunk already stored is skipped, one held by a live attempt is "busy" (the task checks
    again when that lease runs out). A chunk whose worker died is claimed again and redone whole: nothing
    of the dead attempt was committed. A chunk that cannot be predicted fails, and its job with it.
    """
    outcome = _chunk_run(CHUNKS, chunk_id=chunk_id, model=None)
    if outcome.status == "succeeded":
        _chunks_after(chunk_id)
    return outcome


def _chunks_after(chunk_id: int) -> None:
    """Go on with the job's chunks after this one that no attempt holds, as their own tasks would.

    A worker that took one chunk then keeps predicting the next while it stores the one before, like the
    job's own attempt does from the other end; alone, each chunk task had first predicted and then
    stored, one core idle at each step. The tasks of the chunks taken here find them stored.
    """
    chunk = (
        BatchPredictionChunk.objects.select_related("job__model_version__registered_model")
        .filter(pk=chunk_id)
        .first()
    )
    if chunk is None or chunk.job.is_terminal:
        return
    model = batch_chunks.model_load(chunk.job.model_version)
    _chunks_walk(
        CHUNKS,
        job=chunk.job,
        model=model,
        after=chunk.index,
        descending=False,
        renew=lambda: None,
        walked_from=chunk_id,
    )


def _chunk_claimable_next(job_id: int, *, after: int | None, descending: bool) -> tuple[int, int] | None:
    """(id, index) of the job's next chunk past `after`, walking down or up, that no live attempt holds."""
    chunks = BatchPredictionChunk.objects.filter(engine.claimable(timezone.now()), job_id=job_id)
    if after is not None:
        chunks = chunks.filter(index__lt=after) if descending else chunks.filter(index__gt=after)
    return chunks.order_by("-index" if descending else "index").values_list("pk", "index").first()


#: A chunk claimed by a walk, and its rows being computed.
_Reserved = tuple[ChunkAttempt, Future[tuple[batch_chunks.Computed, dict[str, float]]]]


def _chunks_walk(
    spec: engine.JobSpec[BatchPredictionChunk],
    *,
    job: BatchPredictionJob,
    model: batch_chunks.Model,
    after: int | None,
    descending: bool,
    renew: Callable[[], None],
    walked_from: int | None = None,
) -> engine.JobOutcome | None:
    """Claim and store the job's free chunks one by one, past `after`, down or up; returns the outcome of
    a chunk that failed (the walk stops there), else None once no free chunk is left. A chunk task's walk
    marks the chunks it claims `walked_from` its own, so they are freed at once if its process dies.

    The next chunks are claimed and computed on threads while the one before them is stored: onnxruntime,
    Arrow, numpy and the database's statement all run without the GIL. Claiming them first means two
    walks that meet never compute the same chunk: each steps past the chunks the other holds or stored.
    """
    depth = _chunks_ahead(job)
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="batch-ahead")
    ahead: deque[_Reserved] = deque()
    past = after

    def reserve() -> None:
        """Claim free chunks past the last one claimed, and start computing them, until `depth` are."""
        nonlocal past
        while len(ahead) < depth:
            found = _chunk_claimable_next(job.pk, after=past, descending=descending)
            if found is None:
                return
            past = found[1]
            claimed = engine.job_claim(spec, job_id=found[0], fields={"walked_from": walked_from})
            if isinstance(claimed, ChunkAttempt):  # else taken meanwhile: look past it
                computing = pool.submit(batch_chunks.chunk_compute_ahead, model, job=job, index=found[1])
                ahead.append((claimed, computing))

    try:
        reserve()
        while ahead:
            attempt, computing = ahead.popleft()
            reserve()
            outcome = _chunk_run(spec, chunk_id=attempt.job.pk, model=model, ahead=computing, claimed=attempt)
            if outcome.status == "failed":
                return outcome
            renew()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # The walk stopped with chunks claimed: hand them back for their own tasks to take.
        for attempt, _ in ahead:
            attempt.release("Handed back: the worker that claimed it stopped first")
    return None


def _chunks_ahead(job: BatchPredictionJob) -> int:
    """Chunks a walk computes while it stores one. With every row stored, storing is the slower step and
    one chunk ahead keeps it busy; with the result file only, computing is, and two threads share it."""
    return 1 if job.store_predictions else 2


def _chunk_run(
    spec: engine.JobSpec[BatchPredictionChunk],
    *,
    chunk_id: int,
    model: batch_chunks.Model | None,
    ahead: Future[tuple[batch_chunks.Computed, dict[str, float]]] | None = None,
    claimed: ChunkAttempt | None = None,
) -> engine.JobOutcome:
    """Run one chunk: claimed here, or already (`claimed`), and computed here, or ahead (`ahead`)."""
    outcome = engine.job_run(
        spec,
        job_id=chunk_id,
        work=lambda attempt: _chunk_work(attempt, model, ahead),
        reason=_failure_reason,
        claim=(lambda: claimed) if claimed is not None else None,
    )
    if outcome.status == "failed":
        chunk = BatchPredictionChunk.objects.filter(pk=chunk_id).first()
        if chunk is not None:
            _job_fail_for_chunk(chunk)
    elif outcome.status == "succeeded":
        logger.info("batch chunk %s stored", chunk_id)
    if outcome.status == "succeeded" and spec is CHUNKS:
        job_id = BatchPredictionChunk.objects.filter(pk=chunk_id).values_list("job_id", flat=True).first()
        if job_id is not None and batch_finish.finish_due(job_id):
            batch_prediction_finish(job_id=job_id)
    return outcome


def _failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, BatchRunError | batch_files.CsvReadError | model_cache.ModelUnavailable):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "The uploaded file is missing from object storage."
    return None


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
        _chunk_leases_end(job.pk)
        outcome = _chunks_walk(
            CHUNKS_IN_JOB, job=job, model=model, after=None, descending=True, renew=attempt.renew
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
            lease_expires_at=timezone.now() + timedelta(seconds=JOBS.lease_seconds),
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
                    transaction.on_commit(lambda unit_id=unit.pk: _enqueue_chunk(unit_id), robust=True)
            attempt.renew()
    attempt.write(chunks_total=count, timings=attempt.timings_rounded())
    job.chunks_total = count


def _chunk_work(
    attempt: ChunkAttempt,
    model: batch_chunks.Model | None,
    ahead: Future[tuple[batch_chunks.Computed, dict[str, float]]] | None = None,
) -> None:
    """Predict and store one claimed chunk, or store it as computed ahead (`ahead`, whose errors are
    raised here, as the chunk's own)."""
    unit = attempt.job
    job = unit.job
    if job.is_terminal:
        raise BatchRunError(f"{job} is {job.status}; chunk {unit.index} is not predicted.")
    started = time.perf_counter()
    if model is None:
        model = batch_chunks.model_load(job.model_version)
    started = attempt.timed("load", started)
    with batch_chunks.collector_paused():
        if ahead is not None:
            computed, seconds = ahead.result()
            attempt.seconds_add(seconds)
        else:
            chunk = batch_chunks.chunk_read(job, unit.index)
            attempt.timed("read", started)
            computed = batch_chunks.chunk_compute(attempt, model, job=job, chunk=chunk)
        attempt.check()
        batch_chunks.chunk_store(attempt, model, job=job, computed=computed)


def batch_prediction_finish(*, job_id: int) -> engine.JobOutcome:
    """Finish a job whose chunks are all stored: assemble its result and errors files and mark it
    SUCCEEDED, exactly once (see predictions.batch.finish.finish_claim). A crash while finishing leaves
    the job to the stale sweep, whose attempt finishes it."""

    def work(attempt: BatchAttempt) -> None:
        with batch_chunks.collector_paused():
            started = time.perf_counter()
            model = batch_chunks.model_load(attempt.job.model_version)
            attempt.timed("load", started)
            batch_finish.job_finish(attempt, model)

    return engine.job_run(
        JOBS,
        job_id=job_id,
        work=work,
        reason=_failure_reason,
        claim=lambda: batch_finish.finish_claim(JOBS, job_id),
    )


def batch_prediction_fail(*, job_id: int, message: str) -> bool:
    """Mark a job that is not finished and not held by a live attempt FAILED (the task gave up).

    Returns whether the job was marked.
    """
    return engine.job_fail(JOBS, job_id=job_id, message=message)


def batch_chunk_fail(*, chunk_id: int, message: str) -> bool:
    """Mark a chunk that is not finished and not held by a live attempt FAILED (its task gave up), and
    its job with it. Returns whether the chunk was marked."""
    return engine.job_fail(CHUNKS, job_id=chunk_id, message=message)


def batch_prediction_jobs_stale_requeue(*, now: datetime | None = None) -> list[int]:
    """Send again jobs and chunks whose message was lost: QUEUED for long, or RUNNING with an expired lease
    (a waiting job's lease runs out when no chunk was stored for that long: its attempt then works on
    the chunks left).

    A job or chunk whose worker died MAX_ATTEMPTS times is failed instead (a chunk with its job). Safe to
    run at any time: the conditional claims ignore what another attempt holds. Returns the jobs' ids.
    """
    engine.jobs_stale_requeue(CHUNKS, now=now)
    return engine.jobs_stale_requeue(JOBS, now=now)
