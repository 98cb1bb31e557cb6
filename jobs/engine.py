"""The leased-job engine: claim by conditional UPDATE, fenced attempts, renew, release, fail, stale requeue.

Every long job (a LeasedJob subclass) runs through these functions, parameterised by its JobSpec. The
rules they keep:

- A worker claims a job with one conditional UPDATE: QUEUED, or RUNNING with an expired lease (its
  worker died). The claim increments `attempts`; that number is the attempt's token.
- Every write of an attempt is fenced by (pk, RUNNING, attempts=token): once another attempt claimed the
  job, the old one's writes change nothing and raise LeaseLost, and it stops.
- `attempts` counts the claims that ended without handing the job back (crashes) plus the current one:
  a transient failure releases the job and takes its claim back. A job claimed more than max_attempts
  times keeps killing its worker (out of memory?) and is failed instead.
- A worker that is asked to stop hands its jobs back at their next write (Stopping); a worker whose pool
  child died ends that job's lease at once (job_lease_end), so another delivery claims it without waiting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.models import LeasedJob

logger = logging.getLogger(__name__)

ERROR_MESSAGE_MAX_LENGTH = 4000
# A busy job is checked again this long after the other attempt's lease runs out, and never sooner.
BUSY_MARGIN_SECONDS = 5
# A QUEUED job is re-sent when its message is not waiting in the broker this long after it was created:
# the broker lost it (restarted without persistence, or down when the job was submitted).
QUEUED_GRACE_SECONDS = 60

# Set in a worker process that is shutting down (jobs.policy connects it to Celery's signals).
stop_requested = threading.Event()

# Every spec by the name of the Celery task that runs its jobs, for the worker's main process.
SPECS_BY_TASK: dict[str, JobSpec[Any]] = {}

J = TypeVar("J", bound=LeasedJob)


class LeaseLost(Exception):
    """Another attempt claimed the job after this attempt's lease ran out; this attempt must stop."""


class Stopping(Exception):
    """The worker is shutting down: the attempt hands the job back at its next write, for another worker."""


@dataclass(frozen=True)
class JobOutcome:
    """What one run of a job's service did.

    status: "succeeded", "failed", "skipped" (already finished or no such job), "busy" (another live
    attempt holds the lease; `retry_in` says when it expires) or "lost" (this attempt lost its lease).
    """

    status: str
    retry_in: int | None = None
    message: str = ""


@dataclass
class JobSpec(Generic[J]):
    """How the engine runs one kind of job: its model, lease, limits and how to send it to a worker.

    Not frozen, so a test can shorten the lease of one spec.
    """

    model: type[J]
    # "training run": logs and messages naming a job; `noun` ("run") where the job is already named.
    label: str
    noun: str
    # Sends the job's id to a worker: the stale sweep calls it (services call it on commit).
    enqueue: Callable[[int], None]
    lease_seconds: float = 300
    # Throttle of Attempt.renew and the period of Attempt.heartbeat.
    renew_seconds: float = 30
    max_attempts: int = 3
    # QUEUED this long without a claim: the message was lost (broker outage) and is sent again.
    stale_queued_minutes: int = 15
    transient_errors: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
    attempt_class: type[Attempt[J]] | None = None
    # Related rows the claimed job is read with.
    select_related: tuple[str, ...] = ()
    # Written with the claim, and with every FAILED mark (besides status, message and times).
    claimed_fields: dict[str, Any] = field(default_factory=dict)
    failed_fields: dict[str, Any] = field(default_factory=dict)
    # Cleans up what dead attempts left behind, when the job is failed without a live attempt to do it.
    abandon: Callable[[J], None] | None = None
    # Called with the job's id when job_lease_end ended its lease (its worker process died): ends the
    # leases of the units the dead attempt held besides the job (a batch job's chunks, say).
    lease_ended: Callable[[int], None] | None = None
    # Called with the job's id by job_lease_end whether or not the job was still held (it may have
    # finished before its process died): ends the leases of the jobs its attempt went on to claim.
    held_along: Callable[[int], None] | None = None
    # The Celery task that runs the job (one id argument): the stale sweep looks for its messages in the
    # broker, and the worker's main process ends the lease of a job whose pool child died.
    task_name: str = ""
    # The ids of this task's messages waiting in the broker, or None when the broker cannot be read.
    broker_ids: Callable[[str], set[int] | None] = field(default=lambda task_name: _waiting_ids(task_name))

    def __post_init__(self) -> None:
        if self.task_name:
            SPECS_BY_TASK[self.task_name] = self

    def name(self, job_id: Any) -> str:
        return f"{self.label} {job_id}"

    def jobs(self) -> QuerySet[J]:
        objects = self.model._default_manager
        return objects.select_related(*self.select_related) if self.select_related else objects.all()


def _waiting_ids(task_name: str) -> set[int] | None:
    from mlops_site.celery import waiting_job_ids

    return waiting_job_ids(task_name)


def interrupted_message(spec: JobSpec[Any], times: int) -> str:
    return (
        f"The {spec.noun} was interrupted {times} times (the worker stopped or ran out of memory) "
        "and was given up."
    )


class Attempt(Generic[J]):
    """One claimed attempt at a job: every write is fenced by the attempt number it claimed the job with."""

    def __init__(self, spec: JobSpec[J], job: J) -> None:
        self.spec = spec
        self.job = job
        self.token: int = job.attempts
        self._renewed_at = time.monotonic()
        self._lost = threading.Event()

    def __str__(self) -> str:
        return f"{self.spec.name(self.job.pk)}: attempt {self.token}"

    def mine(self) -> QuerySet[J]:
        """The job, as long as this attempt holds it."""
        return self.spec.model._default_manager.filter(
            pk=self.job.pk, status=LeasedJob.Status.RUNNING, attempts=self.token
        )

    def lease_lost(self) -> LeaseLost:
        return LeaseLost(f"{self} lost its lease")

    def lease_fields(self) -> dict[str, datetime]:
        return {"lease_expires_at": timezone.now() + timedelta(seconds=self.spec.lease_seconds)}

    def check(self) -> None:
        """Raise LeaseLost if the heartbeat found the job taken by another attempt, Stopping if the worker
        is shutting down."""
        if self._lost.is_set():
            raise self.lease_lost()
        if stop_requested.is_set():
            raise Stopping(f"{self}: the worker is shutting down")

    def write(self, *, only_if: Q | None = None, **fields: Any) -> None:
        """Update the job and renew the lease, fenced; raises LeaseLost when another attempt holds it.

        `only_if` adds a condition of the job's own (a checkpoint's expected value) to the fence.
        """
        self.check()
        mine = self.mine() if only_if is None else self.mine().filter(only_if)
        if mine.update(**fields, **self.lease_fields()) != 1:
            raise self.lease_lost()
        self._renewed_at = time.monotonic()

    def renew(self, *, force: bool = False) -> None:
        """Extend the lease, at most once per renew_seconds unless forced; raises LeaseLost."""
        if force or time.monotonic() - self._renewed_at >= self.spec.renew_seconds:
            self.write()
        else:
            self.check()

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Renew the lease from a thread while the block runs, for steps longer than the lease.

        A renewal that finds the job taken marks the attempt lost; the next write or check raises.
        """
        stop = threading.Event()
        name = f"{self.spec.label.replace(' ', '-')}-{self.job.pk}-lease"
        thread = threading.Thread(target=self._beat, args=(stop,), name=name, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    def _beat(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.spec.renew_seconds):
                try:
                    renewed = self.mine().update(**self.lease_fields())
                except DatabaseError:
                    logger.warning("%s could not renew its lease; trying again", self, exc_info=True)
                    continue
                if renewed != 1:
                    self._lost.set()
                    return
                self._renewed_at = time.monotonic()
        finally:
            connection.close()

    def succeed(self, **fields: Any) -> None:
        """Mark the job SUCCEEDED with `fields`, fenced; raises LeaseLost when another attempt holds it."""
        finished = self.mine().update(
            status=LeasedJob.Status.SUCCEEDED,
            error_message="",
            finished_at=timezone.now(),
            lease_expires_at=None,
            **fields,
        )
        if finished != 1:
            raise self.lease_lost()

    def release(self, message: str) -> None:
        """Hand the job back for the task's retry: the lease ends now and the claim is taken back.

        Taking the claim back keeps `attempts` a count of crashes (what max_attempts limits), and the
        number stays unique among live attempts, as the fence needs. Best effort: the database may be
        what failed.
        """
        with contextlib.suppress(DatabaseError):
            self.mine().update(
                lease_expires_at=timezone.now(), attempts=F("attempts") - 1, **self.released_fields(message)
            )

    def fail(self, message: str) -> JobOutcome:
        """Mark the job FAILED with the reason, unless another attempt took it over meanwhile."""
        message = message[:ERROR_MESSAGE_MAX_LENGTH]
        marked = self.mine().update(
            status=LeasedJob.Status.FAILED,
            error_message=message,
            finished_at=timezone.now(),
            lease_expires_at=None,
            **self.spec.failed_fields,
            **self.failed_fields(),
        )
        if not marked:
            logger.warning("%s failed after losing its lease: %s", self, message)
            return JobOutcome("lost", message=f"Another attempt took over the {self.spec.noun}.")
        logger.info("%s failed: %s", self.spec.name(self.job.pk), message)
        return JobOutcome("failed", message=message)

    def released_fields(self, message: str) -> dict[str, Any]:
        """More fields a subclass writes when the job is handed back."""
        return {}

    def failed_fields(self) -> dict[str, Any]:
        """More fields a subclass writes when this attempt fails the job."""
        return {}


def claimable(now: datetime) -> Q:
    """Jobs a new attempt may claim at `now`: queued, or running under a lease that ended (or never began)."""
    return (
        Q(status=LeasedJob.Status.QUEUED)
        | Q(status=LeasedJob.Status.RUNNING, lease_expires_at__lt=now)
        | Q(status=LeasedJob.Status.RUNNING, lease_expires_at__isnull=True)
    )


def job_claim(
    spec: JobSpec[J], *, job_id: int, fields: dict[str, Any] | None = None
) -> Attempt[J] | JobOutcome:
    """Claim the job for a new attempt, or say why not: finished or missing ("skipped") or "busy".

    `fields` are written with the claim besides the spec's claimed_fields (and over them)."""
    model = spec.model
    now = timezone.now()
    claimed = model._default_manager.filter(claimable(now), pk=job_id).update(
        status=LeasedJob.Status.RUNNING,
        lease_expires_at=now + timedelta(seconds=spec.lease_seconds),
        attempts=F("attempts") + 1,
        started_at=Coalesce("started_at", now),
        **{**spec.claimed_fields, **(fields or {})},
    )
    job = spec.jobs().filter(pk=job_id).first()
    if job is None:
        return JobOutcome("skipped", message=f"There is no {spec.name(job_id)}.")
    if claimed == 1:
        return (spec.attempt_class or Attempt)(spec, job)
    if job.is_terminal:
        return JobOutcome("skipped", message=f"{spec.name(job_id).capitalize()} already {job.status}.")
    remaining = (job.lease_expires_at - now).total_seconds() if job.lease_expires_at else 0
    return JobOutcome(
        "busy",
        retry_in=max(BUSY_MARGIN_SECONDS, int(remaining) + BUSY_MARGIN_SECONDS),
        message=f"Another attempt holds the {spec.noun}.",
    )


def job_run(
    spec: JobSpec[J],
    *,
    job_id: int,
    work: Callable[[Any], JobOutcome | None],
    reason: Callable[[Exception], str | None] = lambda exc: None,
    undo: Callable[[Any], None] | None = None,
    claim: Callable[[], Attempt[J] | JobOutcome] | None = None,
) -> JobOutcome:
    """Claim the job and do its `work` on the attempt; idempotent, so a duplicate message is harmless.

    `claim` replaces the usual claim (job_claim) for a job claimed on a condition of its own; `work` may
    return a JobOutcome that says how the attempt ended (by default "succeeded").

    A duplicate finds the job busy or finished. LeaseLost stops the attempt without touching the job.
    Transient errors undo the attempt, hand the job back and are raised for the task to retry. Any other
    error undoes the attempt and fails the job with `reason(exc)`, or "Unexpected error" when that is
    None. A job claimed more than max_attempts times is failed before its work starts.
    """
    claimed = job_claim(spec, job_id=job_id) if claim is None else claim()
    if isinstance(claimed, JobOutcome):
        return claimed
    attempt = claimed
    if attempt.token > spec.max_attempts:
        if spec.abandon is not None:
            spec.abandon(attempt.job)
        return attempt.fail(interrupted_message(spec, attempt.token - 1))
    try:
        done = work(attempt)
    except LeaseLost:
        logger.warning("%s lost its lease to another attempt; stopping", attempt)
        return JobOutcome("lost", message=f"Another attempt took over the {spec.noun}.")
    except Stopping:
        logger.warning("%s: the worker is shutting down; handing the %s back", attempt, spec.noun)
        if undo is not None:
            undo(attempt)
        attempt.release("Handed back: its worker was shutting down")
        raise
    except spec.transient_errors as exc:
        logger.warning("%s: transient failure, will retry: %s", spec.name(job_id), exc)
        if undo is not None:
            undo(attempt)
        attempt.release(f"Waiting to retry: {exc}")
        raise
    except Exception as exc:
        message = reason(exc)
        if message is None:
            logger.exception("%s failed unexpectedly", spec.name(job_id))
            message = f"Unexpected error ({type(exc).__name__}): {exc}"
        if undo is not None:
            undo(attempt)
        return attempt.fail(message)
    return done if isinstance(done, JobOutcome) else JobOutcome("succeeded")


def job_fail(spec: JobSpec[J], *, job_id: int, message: str) -> bool:
    """Mark a job FAILED that is not finished and not held by a live attempt (for example the task gave up).

    Returns whether the job was marked; then `spec.abandon` cleans up after its dead attempts.
    """
    now = timezone.now()
    not_held = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    marked = spec.model._default_manager.filter(
        not_held, pk=job_id, status__in=[LeasedJob.Status.QUEUED, LeasedJob.Status.RUNNING]
    ).update(
        status=LeasedJob.Status.FAILED,
        error_message=message[:ERROR_MESSAGE_MAX_LENGTH],
        finished_at=now,
        lease_expires_at=None,
        **spec.failed_fields,
    )
    if marked and spec.abandon is not None:
        spec.abandon(spec.jobs().get(pk=job_id))
    return marked == 1


def job_lease_end(spec: JobSpec[J], *, job_id: int) -> bool:
    """End the lease of a RUNNING job whose attempt is known dead (its pool child was killed).

    The next delivery then claims it at once instead of waiting for the lease to run out. The claim it
    made still counts, so a job that keeps killing its worker is failed after max_attempts. Should the
    attempt be alive after all, its fenced writes change nothing once another attempt claims the job.
    """
    now = timezone.now()
    ended = spec.model._default_manager.filter(
        pk=job_id, status=LeasedJob.Status.RUNNING, lease_expires_at__gt=now
    ).update(lease_expires_at=now)
    if ended and spec.lease_ended is not None:
        spec.lease_ended(job_id)
    if spec.held_along is not None:
        spec.held_along(job_id)
    return ended == 1


def jobs_stale_requeue(spec: JobSpec[J], *, now: datetime | None = None) -> list[int]:
    """Send again jobs whose message was lost: QUEUED without a message, or RUNNING with an expired lease.

    A QUEUED job is re-sent when its message is not waiting in the broker QUEUED_GRACE_SECONDS after it
    was created; when the broker cannot be read, after stale_queued_minutes. A job whose lease ran out
    after max_attempts claims is failed instead. Returns the ids sent. Safe to run at any time: the
    claim ignores jobs another attempt holds, and a duplicate message finds the job busy or finished.
    """
    now = now or timezone.now()
    waiting = spec.broker_ids(spec.task_name) if spec.task_name else None
    if waiting is None:
        queued = Q(
            status=LeasedJob.Status.QUEUED, created_at__lt=now - timedelta(minutes=spec.stale_queued_minutes)
        )
    else:
        queued = Q(
            status=LeasedJob.Status.QUEUED, created_at__lt=now - timedelta(seconds=QUEUED_GRACE_SECONDS)
        ) & ~Q(pk__in=waiting)
    stale = spec.model._default_manager.filter(
        queued | Q(status=LeasedJob.Status.RUNNING, lease_expires_at__lt=now)
    )
    sent = []
    for job_id, status, attempts in stale.values_list("pk", "status", "attempts"):
        if status == LeasedJob.Status.RUNNING and attempts >= spec.max_attempts:
            job_fail(spec, job_id=job_id, message=interrupted_message(spec, attempts))
            continue
        spec.enqueue(job_id)
        sent.append(job_id)
    return sent
