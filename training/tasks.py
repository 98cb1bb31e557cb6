"""Celery tasks for training runs; each calls a training service and decides whether to retry."""

from __future__ import annotations

from celery import shared_task

from jobs.policy import LeasedJobTask
from training import retraining_services, services


@shared_task(
    name="training.tasks.training_run_execute_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(services.training_run_fail),
)
def training_run_execute_task(self: LeasedJobTask, run_id: int) -> str:
    """Run the training service; a duplicate message finds the run busy (retried later) or finished."""
    return self.leased_run(
        run_id,
        execute=lambda: services.training_run_execute(run_id=run_id),
        transient_errors=services.TRANSIENT_ERRORS,
    )


@shared_task(name="training.tasks.training_runs_stale_requeue_task", ignore_result=True)
def training_runs_stale_requeue_task() -> int:
    """Re-send runs whose message was lost or whose worker died; harmless to run any number of times."""
    return len(services.training_runs_stale_requeue())


@shared_task(
    name="training.tasks.retraining_run_task",
    bind=True,
    base=LeasedJobTask,
    job_fail=staticmethod(retraining_services.retraining_fail),
)
def retraining_run_task(self: LeasedJobTask, retraining_id: int) -> str:
    """Run a retraining; a duplicate message finds it busy (retried later) or finished."""
    return self.leased_run(
        retraining_id,
        execute=lambda: retraining_services.retraining_run(retraining_id=retraining_id),
        transient_errors=retraining_services.RETRAININGS.transient_errors,
    )


@shared_task(name="training.tasks.retraining_loop_check_task", ignore_result=True)
def retraining_loop_check_task() -> dict[str, list[int]]:
    """Triggers, shadow decisions and rollbacks for every model; each step is safe to run twice at once."""
    return retraining_services.retraining_loop_check()


@shared_task(name="training.tasks.retrainings_stale_requeue_task", ignore_result=True)
def retrainings_stale_requeue_task() -> int:
    return len(retraining_services.retrainings_stale_requeue())
