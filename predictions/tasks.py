"""Celery tasks for batch prediction jobs; each calls a service and decides whether to retry."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from jobs import retry as leased_tasks
from predictions.batch import services as batch_services

logger = logging.getLogger(__name__)


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


@shared_task(
    name="predictions.tasks.batch_prediction_run_task",
    bind=True,
    base=BatchPredictionTask,
    acks_late=True,
    ignore_result=True,
    max_retries=None,
)
def batch_prediction_run_task(self: Task, job_id: int) -> str:
    """Run the batch service; a duplicate message finds the job busy (retried later) or finished."""
    return leased_tasks.leased_job_run(
        self,
        label=f"batch job {job_id}",
        execute=lambda: batch_services.batch_prediction_run(job_id=job_id),
        fail=lambda message: batch_services.batch_prediction_fail(job_id=job_id, message=message),
        transient_errors=batch_services.TRANSIENT_ERRORS,
    )


@shared_task(name="predictions.tasks.batch_prediction_jobs_stale_requeue_task", ignore_result=True)
def batch_prediction_jobs_stale_requeue_task() -> int:
    """Re-send jobs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(batch_services.batch_prediction_jobs_stale_requeue())
