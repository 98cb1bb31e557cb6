"""Celery tasks of the feedback app; each calls a service and decides whether to retry."""

from __future__ import annotations

from celery import shared_task

from feedback.imports import services as import_services
from jobs.policy import LeasedJobTask


@shared_task(
    name="feedback.tasks.feedback_import_run_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(import_services.feedback_import_fail),
)
def feedback_import_run_task(self: LeasedJobTask, import_id: int) -> str:
    """Run the import service; a duplicate message finds the import busy (retried later) or finished."""
    return self.leased_run(
        import_id,
        execute=lambda: import_services.feedback_import_run(import_id=import_id),
        transient_errors=import_services.TRANSIENT_ERRORS,
    )


@shared_task(name="feedback.tasks.feedback_imports_stale_requeue_task", ignore_result=True)
def feedback_imports_stale_requeue_task() -> int:
    """Re-send imports whose message was lost or whose worker died; harmless to run any number of times."""
    return len(import_services.feedback_imports_stale_requeue())
