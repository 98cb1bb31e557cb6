"""Writes for training runs: queueing a run, executing it on the leased-job engine, failing, re-sending."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, transaction

from datasets.models import DatasetVersion
from jobs import engine
from mlops_site import storage
from models_registry import mlflow_gateway
from models_registry import services as registry_services
from models_registry.models import RegisteredModel
from training import demo_promotion, execution, validation
from training.models import TrainingRun

# A worker renews its lease every LEASE_RENEW_SECONDS from a heartbeat thread and at every step; a run
# whose lease ran out was left by a dead worker and may be claimed again.
LEASE_SECONDS = 180
LEASE_RENEW_SECONDS = 30
# A run claimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    mlflow_gateway.RegistryUnavailable,
    storage.StorageError,
    OperationalError,
    InterfaceError,
)
# Runs queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15


def _enqueue(run_id: int) -> None:
    from training.tasks import training_run_execute_task

    training_run_execute_task.delay(run_id)


def _abandon(run: TrainingRun) -> None:
    # An attempt that died after registering in MLflow left a version no ModelVersion records.
    execution.registration_discard(run=run, known_version=None)


RUNS = engine.JobSpec(
    model=TrainingRun,
    label="training run",
    noun="run",
    enqueue=_enqueue,
    lease_seconds=LEASE_SECONDS,
    renew_seconds=LEASE_RENEW_SECONDS,
    max_attempts=MAX_ATTEMPTS,
    stale_queued_minutes=STALE_QUEUED_MINUTES,
    task_name="training.tasks.training_run_execute_task",
    transient_errors=TRANSIENT_ERRORS,
    attempt_class=execution.RunAttempt,
    select_related=("dataset_version__dataset", "registered_model"),
    claimed_fields={"progress_message": "Starting"},
    failed_fields={"progress_message": "Failed"},
    abandon=_abandon,
)


def training_run_create(
    *,
    dataset_version: DatasetVersion | int,
    model_name: str,
    algorithm: str,
    params: dict[str, Any] | None,
    created_by: AbstractBaseUser | None,
    target_column: str | None = None,
    task: str | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    holdout: dict[str, Any] | None = None,
    enqueue: bool = True,
) -> TrainingRun:
    """Record a QUEUED run and send it to the worker when the transaction commits.

    `holdout` is a retraining's explicit split (ml.holdout.HoldoutPlan as a dict). With `enqueue` False the
    caller runs it itself (a retraining executes its run inline); the stale sweep still re-sends it
    should that caller die.

    Requests the worker would refuse raise ValidationError naming each field before anything is
    stored: params not a JSON object or not taken by the algorithm's estimator, an unknown algorithm or
    task, an algorithm of another task than the run's or the model's, a holdout share outside
    TEST_SIZE_MIN..TEST_SIZE_MAX, a seed out of range, a missing dataset version, a target or task that
    contradicts the registered model. Problems with the data itself (unknown target column, one class,
    too few rows) are found by the worker and make the run FAILED with the reason.
    """
    params = {} if params is None else params
    if isinstance(dataset_version, int) and not isinstance(dataset_version, bool):
        found = DatasetVersion.objects.select_related("dataset").filter(pk=dataset_version).first()
        if found is None:
            raise ValidationError({"dataset_version": [f"Dataset version {dataset_version} does not exist."]})
        dataset_version = found
    if not isinstance(dataset_version, DatasetVersion) or dataset_version.pk is None:
        raise ValidationError({"dataset_version": ["Choose an existing dataset version to train on."]})
    target_column = (target_column or "").strip() or None
    task = task or None
    problems = validation.run_inputs_problems(
        params=params,
        algorithm=algorithm,
        task=task,
        seed=seed,
        test_size=test_size,
        target_column=target_column,
    )
    if problems:
        raise ValidationError(problems)
    target_column = target_column or dataset_version.target_column
    model_name = registry_services.registered_model_name_validate(model_name)

    with transaction.atomic():
        # Locked until the run is recorded: a deletion of the version (datasets.services) locks it too, so
        # either the run is refused here or the deletion sees the run and refuses.
        if not DatasetVersion.objects.select_for_update().filter(pk=dataset_version.pk).exists():
            raise ValidationError(
                {"dataset_version": [f"Dataset version {dataset_version} was deleted; choose another one."]}
            )
        # A new name is registered when the run records its version: a failed run leaves no empty model.
        registered = RegisteredModel.objects.filter(name=model_name).first()
        problems = validation.model_problems(
            registered=registered, target_column=target_column, task=task, algorithm=algorithm, params=params
        )
        if problems:
            raise ValidationError(problems)
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            registered_model=registered,
            model_name=model_name,
            target_column=target_column,
            task=task or "",
            algorithm=algorithm,
            params=params,
            seed=seed,
            test_size=float(test_size),
            created_by=created_by,
            holdout=holdout or {},
            progress_message="Waiting for a worker",
        )
        run_id = run.pk
        if enqueue:
            # robust: a broker outage must not undo the recorded run; training_runs_stale_requeue re-sends
            # it.
            transaction.on_commit(lambda: _enqueue(run_id), robust=True)
    return run


def training_run_retry(*, training_run: TrainingRun, created_by: AbstractBaseUser | None) -> TrainingRun:
    """Queue a new run with the inputs of a FAILED one; the failed run stays as it was, for the record."""
    if training_run.status != TrainingRun.Status.FAILED:
        raise ValidationError(
            f"Only failed runs can be retried; run {training_run.pk} is {training_run.status}."
        )
    return training_run_create(
        dataset_version=training_run.dataset_version,
        model_name=training_run.model_name,
        algorithm=training_run.algorithm,
        params=training_run.params,
        created_by=created_by,
        target_column=training_run.target_column,
        task=training_run.task or None,
        seed=training_run.seed,
        test_size=training_run.test_size,
    )


def training_run_execute(*, run_id: int) -> engine.JobOutcome:
    """Claim the run and train, store, log, register and record its model version.

    Idempotent and crash-safe: the claim is a conditional UPDATE (see jobs.engine), so a duplicate message
    finds the run busy or finished. A retry after a crash reuses the MLflow run (keyed by the run's
    `key`) and its registered version, and the ModelVersion is created once per run. Storage and MLflow
    calls happen outside transactions.

    Problems with the inputs make the run FAILED with the reason and return normally. Transient errors
    (MLflow, storage or the database unreachable) undo what this attempt registered, release the lease
    and are raised for the task to retry. Any failure deletes the MLflow version this attempt registered
    and the model files it stored, unless a ModelVersion records them.
    """
    outcome = engine.job_run(
        RUNS,
        job_id=run_id,
        work=execution.run_work,
        reason=execution.failure_reason,
        undo=execution.attempt_undo,
    )
    if outcome.status in ("succeeded", "skipped"):
        # The demo model goes to production once trained; a retry that finds the run finished still
        # promotes it (the promotion is idempotent).
        demo_promotion.demo_model_promote(run_id=run_id)
    return outcome


def training_run_fail(*, run_id: int, message: str) -> bool:
    """Mark a run that is not finished and not held by a live attempt FAILED (the task gave up retrying).

    Returns whether the run was marked. Also deletes an MLflow version its attempts left unrecorded.
    """
    return engine.job_fail(RUNS, job_id=run_id, message=message)


def training_runs_stale_requeue(*, now: datetime | None = None) -> list[int]:
    """Send again runs whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    A run whose worker died MAX_ATTEMPTS times is failed instead. Safe to run at any time: the worker's
    conditional claim ignores runs another attempt holds.
    """
    return engine.jobs_stale_requeue(RUNS, now=now)
