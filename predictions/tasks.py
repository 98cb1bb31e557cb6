"""Celery tasks for batch prediction jobs; each calls a service and decides whether to retry."""

from __future__ import annotations

from celery import shared_task

from jobs.policy import LeasedJobTask
from predictions.batch import services as batch_services


@shared_task(
    name="predictions.tasks.batch_prediction_run_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(batch_services.batch_prediction_fail),
)
def batch_prediction_run_task(self: LeasedJobTask, job_id: int) -> str:
    """Run the batch service; a duplicate message finds the job busy (retried later) or finished."""
    return self.leased_run(
        job_id,
        execute=lambda: batch_services.batch_prediction_run(job_id=job_id),
        transient_errors=batch_services.TRANSIENT_ERRORS,
    )


@shared_task(name="predictions.tasks.batch_prediction_jobs_stale_requeue_task", ignore_result=True)
def batch_prediction_jobs_stale_requeue_task() -> int:
    """Re-send jobs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(batch_services.batch_prediction_jobs_stale_requeue())
