"""The retry policy shared by Celery tasks that run a leased job (training runs, batch predictions)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from celery import Task

logger = logging.getLogger(__name__)

# Transient failures (MLflow, storage or the database unreachable) are retried with growing waits,
# then the job is failed: 30 s, 1, 2, 4, 8 and 10 minutes.
TRANSIENT_MAX_RETRIES = 6
TRANSIENT_BACKOFF_MAX_SECONDS = 600
# Waiting for another attempt's lease is not a failure; a dead worker's lease runs out within minutes.
BUSY_MAX_RETRIES = 200


class Outcome(Protocol):
    status: str
    retry_in: int | None


def backoff_seconds(retries: int) -> int:
    return min(30 * 2**retries, TRANSIENT_BACKOFF_MAX_SECONDS)


def leased_job_run(
    task: Task,
    *,
    label: str,
    execute: Callable[[], Outcome],
    fail: Callable[[str], object],
    transient_errors: tuple[type[BaseException], ...],
) -> str:
    """Run a job's service once and decide about retries.

    A duplicate message finds the job busy (retried when the other attempt's lease runs out) or
    finished (nothing to do). Transient errors are retried with back-off, then the job is failed.
    """
    try:
        outcome = execute()
    except transient_errors as exc:
        if task.request.retries >= TRANSIENT_MAX_RETRIES:
            fail(f"Gave up after {task.request.retries + 1} attempts; the last one failed with: {exc}")
            return "failed"
        raise task.retry(exc=exc, countdown=backoff_seconds(task.request.retries)) from exc
    if outcome.status == "busy":
        if task.request.retries >= BUSY_MAX_RETRIES:
            logger.error("%s: still held by another attempt after %s checks", label, BUSY_MAX_RETRIES)
            return "busy"
        raise task.retry(countdown=outcome.retry_in)
    return outcome.status
