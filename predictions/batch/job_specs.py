"""The batch jobs and their chunks on the leased-job engine: how each is claimed, sent to a worker, freed
when its worker dies and failed; the services of predictions.batch run them with these specs."""

from __future__ import annotations

import dataclasses
import logging

from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from jobs import engine
from mlops_site import storage
from predictions import model_cache
from predictions.batch import files as batch_files
from predictions.batch.attempt import BatchAttempt, BatchRunError, ChunkAttempt
from predictions.models import BatchPredictionChunk, BatchPredictionJob

logger = logging.getLogger(__name__)

# Every chunk renews the lease; a job RUNNING with an expired lease was left by a dead worker.
LEASE_SECONDS = 300
# A job claimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
# Jobs queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (storage.StorageError, OperationalError, InterfaceError)


def job_enqueue(job_id: int) -> None:
    from predictions.tasks import batch_prediction_run_task

    batch_prediction_run_task.delay(job_id)


def chunk_enqueue(chunk_id: int) -> None:
    from predictions.tasks import batch_chunk_run_task

    batch_chunk_run_task.delay(chunk_id)


def chunk_leases_end(job_id: int) -> None:
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
    claim (chunk_runs._chunks_after) and send their tasks, so another worker takes them at once."""
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
        chunk_enqueue(held_id)


def job_fail_for_chunk(chunk: BatchPredictionChunk) -> None:
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
    # Looked up when called, so tests can send the jobs elsewhere by replacing job_enqueue.
    enqueue=lambda job_id: job_enqueue(job_id),
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
    lease_ended=chunk_leases_end,
)

# A chunk claimed by its own task, on any worker.
CHUNKS = engine.JobSpec(
    model=BatchPredictionChunk,
    label="batch chunk",
    noun="chunk",
    enqueue=lambda chunk_id: chunk_enqueue(chunk_id),
    lease_seconds=LEASE_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="predictions.tasks.batch_chunk_run_task",
    transient_errors=TRANSIENT_ERRORS,
    attempt_class=ChunkAttempt,
    select_related=("job__model_version__registered_model",),
    claimed_fields={"claimed_by_job": False, "walked_from": None},
    abandon=job_fail_for_chunk,
    held_along=lambda chunk_id: _walk_leases_end(chunk_id),
)
# A chunk claimed by its job's own attempt, which works on the chunks no other worker has taken.
CHUNKS_IN_JOB = dataclasses.replace(
    CHUNKS, task_name="", claimed_fields={"claimed_by_job": True, "walked_from": None}
)


def failure_reason(exc: Exception) -> str | None:
    if isinstance(exc, BatchRunError | batch_files.CsvReadError | model_cache.ModelUnavailable):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "The uploaded file is missing from object storage."
    return None
