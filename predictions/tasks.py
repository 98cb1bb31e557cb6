"""Celery tasks for batch prediction jobs and shadow batches; each calls a service and decides whether to
retry."""

from __future__ import annotations

from celery import shared_task

from jobs.policy import LeasedJobTask
from predictions import shadow
from predictions.batch import chunk_runs as batch_chunk_runs
from predictions.batch import job_specs as batch_job_specs
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
        transient_errors=batch_job_specs.TRANSIENT_ERRORS,
    )


@shared_task(
    name="predictions.tasks.batch_chunk_run_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(batch_services.batch_chunk_fail),
)
def batch_chunk_run_task(self: LeasedJobTask, chunk_id: int) -> str:
    """Predict one chunk of a batch job; a chunk already stored is skipped, one held elsewhere is busy."""
    return self.leased_run(
        chunk_id,
        execute=lambda: batch_chunk_runs.batch_chunk_run(chunk_id=chunk_id),
        transient_errors=batch_job_specs.TRANSIENT_ERRORS,
    )


@shared_task(name="predictions.tasks.batch_prediction_jobs_stale_requeue_task", ignore_result=True)
def batch_prediction_jobs_stale_requeue_task() -> int:
    """Re-send jobs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(batch_services.batch_prediction_jobs_stale_requeue())


@shared_task(
    name="predictions.tasks.shadow_batch_run_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(shadow.shadow_batch_fail),
)
def shadow_batch_run_task(self: LeasedJobTask, batch_id: int) -> str:
    """Score a shadow batch; a duplicate message finds the batch busy (retried later) or finished."""
    return self.leased_run(
        batch_id,
        execute=lambda: shadow.shadow_batch_run(batch_id=batch_id),
        transient_errors=shadow.TRANSIENT_ERRORS,
    )


@shared_task(name="predictions.tasks.shadow_batches_create_task", ignore_result=True)
def shadow_batches_create_task() -> int:
    """Cut new production predictions of models in shadow mode into batches; harmless to run twice."""
    return len(shadow.shadow_batches_create())


@shared_task(name="predictions.tasks.shadow_batches_stale_requeue_task", ignore_result=True)
def shadow_batches_stale_requeue_task() -> int:
    """Re-send shadow batches whose message was lost or whose worker died; harmless to run twice."""
    return len(shadow.shadow_batches_stale_requeue())
