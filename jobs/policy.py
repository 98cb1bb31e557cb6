"""The Celery task policy of leased jobs: retries, on_failure, hand-back on shutdown and on a lost child."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from billiard.exceptions import WorkerLostError
from billiard.process import active_children
from celery import Task, signals
from celery.exceptions import Reject
from celery.worker.request import Request

from jobs import engine
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


class LeasedJobRequest(Request):
    """A leased job's message in the worker's main process: a pool child's death ends the job's lease.

    Celery requeues the message of a task whose child died (task_reject_on_worker_lost); with the lease
    ended, the next delivery claims the job at once instead of finding it busy until the lease runs out.
    """

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        spec = engine.SPECS_BY_TASK.get(self.task.name)
        if isinstance(exc, WorkerLostError | SystemExit) and spec is not None and self.args:
            try:
                if engine.job_lease_end(spec, job_id=self.args[0]):
                    logger.warning("%s: its worker process died; the lease is ended", spec.name(self.args[0]))
            except Exception:
                logger.exception("%s %s: could not end the lease", self.task.name, self.args[0])
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


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
    Request = LeasedJobRequest

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
        except engine.Stopping as exc:
            # The job is handed back; its message goes back to the queue for another (or the next) worker.
            raise Reject(str(exc), requeue=True) from exc
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


# What the worker's main process sends its pool children on a warm shutdown. Not SIGTERM: billiard makes
# that one end a child at once, and Celery leaves SIGUSR2 alone in pool children.
HAND_BACK_SIGNAL = signal.SIGUSR2


@signals.worker_shutting_down.connect
def _hand_back_on_shutdown(**kwargs: Any) -> None:
    """A warm shutdown (SIGTERM) asks every running job to hand itself back at its next write.

    Without it the worker would wait for a long job to end, and be killed before it did: the job would
    then wait for its lease, its message for the broker's visibility timeout.
    """
    engine.stop_requested.set()
    for child in active_children():
        if child.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, HAND_BACK_SIGNAL)


@signals.worker_process_init.connect
def _listen_for_shutdown(**kwargs: Any) -> None:
    """In a pool child, HAND_BACK_SIGNAL asks its job to hand itself back."""
    signal.signal(HAND_BACK_SIGNAL, lambda signum, frame: engine.stop_requested.set())
