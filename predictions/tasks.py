"""Celery tasks for batch prediction jobs; each calls a service and decides whether to retry."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from predictions import batch_services

logger = logging.getLogger(__name__)

# Transient failures (storage or the database unreachable) are retried with growing waits, then the job
# is failed: 30 s, 1, 2, 4, 8 and 10 minutes.
TRANSIENT_MAX_RETRIES = 6
TRANSIENT_BACKOFF_MAX_SECONDS = 600
# Waiting for another attempt's lease is not a failure; a dead worker's lease runs out within minutes.
BUSY_MAX_RETRIES = 200


def _backoff(retries: int) -> int:
    return min(30 * 2**retries, TRANSIENT_BACKOFF_MAX_SECONDS)


class BatchPredictionTask(Task):
    """Marks the job FAILED when the task itself fails (an error the service did not handle)."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = kwargs.get("job_id", args[0] if args else None)
        if job_id is None:
            return
        try:
            batch_services.batch_prediction_fail(
                job_id=job_id, message=f"The worker task failed ({type(exc).__name__}): {exc}"
            )
        except Exception:
            logger.exception("batch job %s: could not be marked failed", job_id)


@shared_task(bind=True, base=BatchPredictionTask, acks_late=True, ignore_result=True, max_retries=None)
def batch_prediction_run_task(self: Task, job_id: int) -> str:
    """Run the batch service; a duplicate message finds the job busy (retried later) or finished."""
    try:
        outcome = batch_services.batch_prediction_run(job_id=job_id)
    except batch_services.TRANSIENT_ERRORS as exc:
        if self.request.retries >= TRANSIENT_MAX_RETRIES:
            batch_services.batch_prediction_fail(
                job_id=job_id,
                message=f"Gave up after {self.request.retries + 1} attempts; the last one failed with: {exc}",
            )
            return "failed"
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if outcome.status == "busy":
        if self.request.retries >= BUSY_MAX_RETRIES:
            logger.error(
                "batch job %s: still held by another attempt after %s checks", job_id, BUSY_MAX_RETRIES
            )
            return "busy"
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(ignore_result=True)
def batch_prediction_jobs_stale_requeue_task() -> int:
    """Re-send jobs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(batch_services.batch_prediction_jobs_stale_requeue())
