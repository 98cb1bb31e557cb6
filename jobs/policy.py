"""The Celery task policy of leased jobs: transient-error retries with back-off, busy retries, on_failure."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from jobs.engine import JobOutcome

logger = logging.getLogger(__name__)

# Transient failures (MLflow, storage or the database unreachable) are retried with growing waits,
# then the job is failed: 30 s, 1, 2, 4, 8 and 10 minutes.
TRANSIENT_MAX_RETRIES = 6
TRANSIENT_BACKOFF_MAX_SECONDS = 600
# Waiting for another attempt's lease is not a failure; a dead worker's lease runs out within minutes.
BUSY_MAX_RETRIES = 200


def backoff_seconds(retries: int) -> int:
    return min(30 * 2**retries, TRANSIENT_BACKOFF_MAX_SECONDS)


class LeasedJobTask(Task):
    """The base of every task that runs a leased job; such a task takes one argument, the job's id.

    Each task names its job's fail service, the one that marks a job FAILED unless a live attempt holds
    it, which takes the id under the task's argument name and a message:
    `@shared_task(base=LeasedJobTask, job_fail=staticmethod(services.training_run_fail), ...)` for
    `training_run_execute_task(self, run_id)` and `training_run_fail(*, run_id, message)`.
    Messages are acknowledged after the task ends, so a worker's death leaves them for another worker.
    """

    acks_late = True
    ignore_result = True
    max_retries = None
    job_fail: Callable[..., bool] | None = None

    def leased_run(
        self,
        job_id: int,
        *,
        execute: Callable[[], JobOutcome],
        transient_errors: tuple[type[BaseException], ...],
    ) -> str:
        """Run the job's service once and decide about retries; returns the outcome's status.

        A duplicate message finds the job busy (retried when the other attempt's lease runs out) or
        finished (nothing to do). Transient errors are retried with back-off, then the job is failed.
        """
        retries = self.request.retries
        try:
            outcome = execute()
        except transient_errors as exc:
            if retries >= TRANSIENT_MAX_RETRIES:
                self._fail(job_id, f"Gave up after {retries + 1} attempts; the last one failed with: {exc}")
                return "failed"
            raise self.retry(exc=exc, countdown=backoff_seconds(retries)) from exc
        if outcome.status == "busy":
            if retries >= BUSY_MAX_RETRIES:
                logger.error(
                    "%s %s: still held by another attempt after %s checks", self.name, job_id, retries
                )
                return "busy"
            raise self.retry(countdown=outcome.retry_in)
        return outcome.status

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Mark the job FAILED when the task itself fails (an error its service did not handle)."""
        job_id = args[0] if args else (kwargs or {}).get(self._id_argument())
        if job_id is None:
            return
        try:
            self._fail(job_id, f"The worker task failed ({type(exc).__name__}): {exc}")
        except Exception:
            logger.exception("%s %s: the job could not be marked failed", self.name, job_id)

    def _id_argument(self) -> str:
        return next(iter(inspect.signature(self.run).parameters))

    def _fail(self, job_id: int, message: str) -> None:
        if self.job_fail is None:
            raise NotImplementedError(f"{self.name} names no job_fail service")
        self.job_fail(**{self._id_argument(): job_id}, message=message)
